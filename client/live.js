// The browser websocket (/ws/browser): connect, check the server's protocol
// version, dispatch messages, and reconnect with exponential backoff whenever
// the socket closes (server restart, CLOSE.TOO_SLOW, network blip).

import { CLOSE, PROTOCOL_VERSION } from "./protocol.js";

export class LiveSocket {
  /**
   * handlers: {onOpen(), onMessage(msg), onState({state, detail, retryIn}), onFatal(message)}
   * state is one of "connecting", "connected", "reconnecting", "error".
   */
  constructor(handlers) {
    this.h = handlers;
    this.ws = null;
    this.attempt = 0;
    this.timer = 0;
    this.ready = false; // hello received and accepted
    this.stopped = false;
    this.everConnected = false;
  }

  /** True while the very first connection attempt is still under way. */
  get firstAttemptPending() {
    return !this.everConnected && this.attempt === 0 && !this.stopped;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws/browser`;
  }

  connect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = 0;
    this.ready = false;
    this.h.onState({ state: "connecting" });
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (e) {
      this._retry(`cannot open websocket: ${e.message}`);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      // Our half of the handshake; the server's hello carries its version.
      this._sendRaw({ type: "hello", protocol: PROTOCOL_VERSION });
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        console.warn("gradwatch: ignoring a non-JSON websocket frame");
        return;
      }
      if (!msg || typeof msg !== "object") return;
      if (!this.ready) {
        if (msg.type !== "hello") return; // nothing is valid before the server's hello
        if (msg.protocol !== PROTOCOL_VERSION) {
          this.stop();
          this.h.onFatal(
            `This page speaks gradwatch protocol ${PROTOCOL_VERSION} but the server speaks ` +
              `${JSON.stringify(msg.protocol)}. Reload the page; if that does not help, upgrade gradwatch so ` +
              "the server and the page match.",
          );
          return;
        }
        this.ready = true;
        this.everConnected = true;
        this.attempt = 0;
        this.h.onState({ state: "connected" });
        this.h.onOpen();
        return;
      }
      this.h.onMessage(msg);
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.ready = false;
      if (this.stopped) return;
      if (ev.code === CLOSE.PROTOCOL_MISMATCH) {
        this.stop();
        this.h.onFatal(
          `The server refused this page's protocol version (${PROTOCOL_VERSION}): ${ev.reason || "version mismatch"}. ` +
            "Reload the page; if that does not help, upgrade gradwatch.",
        );
        return;
      }
      let why = ev.reason || `connection closed (code ${ev.code})`;
      if (ev.code === CLOSE.UNAUTHORIZED) why = "not signed in: open the login link printed by `gradwatch serve`";
      else if (ev.code === CLOSE.FORBIDDEN_ORIGIN) why = "the server refused this page's origin";
      else if (ev.code === CLOSE.TOO_SLOW) why = "the page fell behind the live stream; catching up";
      this._retry(why, ev.code);
    };
    ws.onerror = () => {
      /* onclose follows and handles the retry */
    };
  }

  _retry(why, code) {
    if (this.stopped) return;
    // 0.5 s, 1 s, 2 s ... capped at 15 s, with jitter so many tabs do not stampede.
    const base = code === CLOSE.TOO_SLOW && this.attempt === 0 ? 250 : 500 * 2 ** Math.min(this.attempt, 5);
    const delay = Math.min(15000, base) * (0.8 + 0.4 * Math.random());
    this.attempt += 1;
    this.h.onState({ state: "reconnecting", detail: why, retryIn: delay });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  _sendRaw(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(obj));
      return true;
    }
    return false;
  }

  /** Send after the handshake; returns false when not connected (the caller resyncs on reconnect). */
  send(obj) {
    return this.ready && this._sendRaw(obj);
  }

  get connected() {
    return this.ready;
  }

  /** Reconnect now (e.g. the user clicked "retry"). */
  retryNow() {
    if (this.stopped) return;
    if (this.ws) return;
    this.attempt = 0;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      try {
        ws.close(1000);
      } catch {
        /* already closed */
      }
    }
    this.ready = false;
  }
}
