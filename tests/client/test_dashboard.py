"""The page against the real server: a real ``gradwatch serve`` process, a
simulated trainer speaking the real wire protocol, and headless Chromium.

The simulated trainer runs in a background thread (websockets' sync client):
it sends one StepRecord every ``interval`` seconds, acks every command at the
step it is about to run, and reports its paused/running status, like the real
callback does.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from gradwatch.protocol import PROTOCOL_VERSION, TRAINER_PATH, dumps

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

XSS_NAME = "<img src=x onerror=alert(1)>"
VARIABLES = ["mlp/dense/kernel", "mlp/dense/bias", "mlp/bn/gamma", "mlp/bn/beta", "mlp/out/kernel", "mlp/out/bias"]
BN_LAYERS = ["mlp/bn"]


class SimTrainer(threading.Thread):
    """A stand-in for the Keras callback: hello, steps, acks, status."""

    def __init__(
        self,
        server: Any,
        run_name: str,
        *,
        run_id: int | None = None,
        first_step: int = 0,
        n_steps: int | None = None,
        nan_steps: tuple[int, ...] = (),
        interval: float = 0.04,
        variables: list[str] | None = None,
        update_ratio: bool = False,
        guard_nonfinite: bool = False,
        probe_every: int = 0,
        bn_layers: list[str] | None = None,
    ) -> None:
        super().__init__(daemon=True, name=f"sim-trainer-{run_name[:20]}")
        self.url = server.ws_url + TRAINER_PATH
        self.headers = server.headers
        self.run_name = run_name
        self.run_id = run_id
        self.step = first_step
        self.n_steps = n_steps
        self.nan_steps = set(nan_steps)
        self.interval = interval
        self.variables = variables or VARIABLES
        self.bn_layers = BN_LAYERS if bn_layers is None else bn_layers
        self.paused = False
        self.clip = 1.0
        self.lr = 1e-3
        self.update_ratio = update_ratio  # report per-variable update/weight ratios
        self.guard_nonfinite = guard_nonfinite  # NaN steps are reported as skipped
        self.probe_every = probe_every  # send a dead-ReLU / BN-gap probe every N steps
        self.commands: list[dict[str, Any]] = []  # as received
        self.acks: list[dict[str, Any]] = []  # as sent
        self.welcomed = threading.Event()
        self.done = threading.Event()
        self._halt = threading.Event()
        self.error: BaseException | None = None

    def record(self, step: int) -> dict[str, Any]:
        gn: list[float] = [10 ** (-1 + 0.4 * math.sin(step / 9 + i)) for i in range(len(self.variables))]
        nan = [0] * len(self.variables)
        if step in self.nan_steps:
            nan[2] = 3
            gn[2] = math.nan
        g = math.sqrt(sum(x * x for x in gn if math.isfinite(x)))
        rec: dict[str, Any] = {
            "step": step,
            "epoch": step // 50,
            "time": time.time(),
            "loss": 2.0 * math.exp(-step / 80),
            "lr": self.lr,
            "global_norm": g,
            "clip_mode": "global_norm",
            "clip_threshold": self.clip,
            "clip_scale": min(1.0, self.clip / g),
            "clipped": g > self.clip,
            "steps_per_sec": 1 / self.interval,
            "grad_norm": gn,
            "grad_nan": nan,
            "grad_inf": [0] * len(self.variables),
            "bn": [[0.1, 0.0, 0.2, 0.01, 1.0 + 0.1 * math.sin(step / 7), 0.9, 1.1, 0.01] for _ in self.bn_layers],
        }
        if self.update_ratio and step not in self.nan_steps:  # a skipped update has no ratio
            rec["update_ratio"] = [self.lr * (0.5 + i) for i in range(len(gn))]
        if self.guard_nonfinite and step in self.nan_steps:
            rec["skipped"] = True
        return rec

    def probe(self, step: int) -> dict[str, Any]:
        return {
            "type": "probe",
            "step": step,
            "dead_relu": {"mlp/dense": min(1.0, 0.05 + step / 400)},
            "bn_gap": {"mlp/bn": 0.2 + 0.1 * math.sin(step / 20)},
        }

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:
            self.error = e
        finally:
            self.done.set()

    def _run(self) -> None:
        with connect(self.url, additional_headers=self.headers, open_timeout=10) as ws:
            hello: dict[str, Any] = {
                "type": "hello",
                "protocol": PROTOCOL_VERSION,
                "run_name": self.run_name,
                "variables": self.variables,
                "bn_layers": self.bn_layers,
                "clip": {"mode": "global_norm", "threshold": self.clip},
            }
            if self.guard_nonfinite:
                hello["guard_nonfinite"] = True
            if self.probe_every:
                hello["relu_layers"] = ["mlp/dense"]
            if self.run_id is not None:
                hello["run_id"] = self.run_id
            ws.send(json.dumps(hello))
            welcome = json.loads(ws.recv(timeout=10))
            assert welcome["type"] == "welcome", welcome
            self.run_id = welcome["run_id"]
            self.welcomed.set()
            sent = 0
            while not self._halt.is_set():
                self._handle_commands(ws)
                if not self.paused:
                    ws.send(dumps({"type": "steps", "records": [self.record(self.step)]}))
                    if self.probe_every and self.step % self.probe_every == 0:
                        ws.send(dumps(self.probe(self.step)))
                    self.step += 1
                    sent += 1
                    if self.n_steps is not None and sent >= self.n_steps:
                        break
                time.sleep(self.interval)  # the simulated trainer's pace

    def _handle_commands(self, ws: Any) -> None:
        while True:
            try:
                msg = json.loads(ws.recv(timeout=0))
            except TimeoutError:
                return
            if msg.get("type") != "command":
                continue
            self.commands.append(msg)
            cmd = msg["command"]
            if cmd["type"] == "pause":
                self.paused = True
            elif cmd["type"] == "resume":
                self.paused = False
            elif cmd["type"] == "set_clip":
                self.clip = float(cmd["threshold"])
            elif cmd["type"] == "set_lr":
                self.lr = float(cmd["lr"])
            ack = {"type": "ack", "id": msg["id"], "state": "applied", "applied_step": self.step}
            ws.send(json.dumps(ack))
            self.acks.append(ack)
            ws.send(json.dumps({"type": "status", "state": "paused" if self.paused else "running", "step": self.step}))

    def stop(self) -> None:
        self._halt.set()
        self.join(15)


@pytest.fixture
def trainers() -> Any:
    started: list[SimTrainer] = []

    def start(*args: Any, **kwargs: Any) -> SimTrainer:
        t = SimTrainer(*args, **kwargs)
        started.append(t)
        t.start()
        assert t.welcomed.wait(15), f"trainer not welcomed: {t.error!r}"
        return t

    yield start
    for t in started:
        t.stop()


def login(page: Any, server: Any) -> None:
    page.goto(f"{server.url}/login?token={server.token}")
    page.wait_for_url(re.compile(re.escape(server.url) + r"/(#.*)?$"))
    assert server.token not in page.url
    page.wait_for_function("window.gradwatch && window.gradwatch.connected === true")


def step_list(page: Any) -> list[int]:
    return page.evaluate("window.gradwatch._debug.state.store ? window.gradwatch._debug.state.store.c.step : []")


def test_live_dashboard_controls_nan_and_xss(gradwatch_server: Any, trainers: Any, browser_page: Any) -> None:
    page = browser_page
    srv = gradwatch_server()
    trainer = trainers(srv, XSS_NAME, nan_steps=(25,))
    run_id = trainer.run_id

    login(page, srv)

    # run list shows the run, its name as literal text
    item = page.locator(f"[data-testid=run-item][data-run-id='{run_id}']")
    item.wait_for()
    assert item.locator("[data-testid=run-item-name]").text_content() == XSS_NAME
    assert page.locator("[data-testid=run-list] img").count() == 0
    item.locator("a").click()
    page.wait_for_function(f"window.gradwatch.runId === {run_id}")
    assert page.evaluate("location.hash") == f"#run={run_id}"
    assert page.locator("[data-testid=run-name]").text_content() == XSS_NAME

    # live steps arrive and reach the charts
    page.wait_for_function("window.gradwatch.steps > 15")
    before = page.evaluate("window.gradwatch.steps")
    page.wait_for_function(f"window.gradwatch.steps >= {before + 10}")
    page.wait_for_function(
        "(() => { const d = document.querySelector('[data-testid=chart-heatmap]');"
        " return d && d.data && d.data[0].z.length === 6 && d.data[0].z[0].length > 10; })()"
    )
    for testid in ("chart-global-norm", "chart-nonfinite", "chart-bn", "chart-loss-lr"):
        n = page.evaluate(f"document.querySelector('[data-testid={testid}]').data[0].x.length")
        assert n > 0, testid
    steps, last = page.evaluate("[window.gradwatch._debug.state.store.c.step, window.gradwatch.lastStep]")
    assert steps == sorted(set(steps)), "steps must be unique and in order"
    assert last == steps[-1]

    # the NaN at step 25 raises the banner and names the variable
    banner = page.locator("[data-testid=nan-banner]")
    banner.wait_for(state="visible")
    assert "mlp/bn/gamma" in banner.text_content()
    assert "25" in banner.text_content()

    # Pause: posted, received by the trainer, acked, shown as applied at that step
    page.locator("[data-testid=btn-pause]").click()
    entry = page.locator("[data-testid=command-entry][data-type=pause]")
    entry.wait_for()
    page.wait_for_selector("[data-testid=command-entry][data-type=pause][data-state=applied]")
    assert [c["command"]["type"] for c in trainer.commands] == ["pause"]
    applied_step = trainer.acks[0]["applied_step"]
    assert f"applied at step {applied_step}" in entry.text_content()
    page.wait_for_function("document.querySelector('[data-testid=run-status]').textContent === 'paused'")

    # set_clip: a 4xx is shown with the server's message; a valid one is applied
    page.locator("[data-testid=clip-threshold]").fill("-2")
    page.locator("[data-testid=clip-apply]").click()
    err = page.locator("[data-testid=control-error]")
    err.wait_for(state="visible")
    assert "422" in err.text_content() and "threshold" in err.text_content()
    page.locator("[data-testid=clip-mode]").select_option("global_norm")
    page.locator("[data-testid=clip-threshold]").fill("0.25")
    page.locator("[data-testid=clip-apply]").click()
    page.wait_for_selector("[data-testid=command-entry][data-type=set_clip][data-state=applied]")
    assert trainer.commands[-1]["command"] == {"type": "set_clip", "mode": "global_norm", "threshold": 0.25}
    page.wait_for_function("document.querySelector('[data-testid=run-clip]').textContent.includes('0.25')")

    # Resume: steps flow again
    page.locator("[data-testid=btn-resume]").click()
    page.wait_for_selector("[data-testid=command-entry][data-type=resume][data-state=applied]")
    after = page.evaluate("window.gradwatch.steps")
    page.wait_for_function(f"window.gradwatch.steps >= {after + 5}")

    # a reload keeps the run (hash) and rebuilds the same history from REST without duplicates
    page.reload()
    page.wait_for_function(f"window.gradwatch.runId === {run_id} && window.gradwatch.steps > 0")
    page.wait_for_function(f"window.gradwatch.steps >= {after + 5}")
    steps = step_list(page)
    assert steps == sorted(set(steps))
    assert page.locator("[data-testid=command-entry]").count() == 3  # pause, set_clip, resume (the 422 made none)
    page.locator("[data-testid=nan-banner]").wait_for(state="visible")

    assert page.gradwatch_problems == [], page.gradwatch_problems
    assert trainer.error is None, trainer.error


def test_reconnects_after_server_restart_and_backfills(gradwatch_server: Any, trainers: Any, browser_page: Any) -> None:
    page = browser_page
    srv = gradwatch_server()
    first = trainers(srv, "restart-me", n_steps=40, interval=0.02)
    run_id = first.run_id
    login(page, srv)
    page.goto(f"{srv.url}/#run={run_id}")
    page.wait_for_function("window.gradwatch.lastStep === 39")
    first.stop()

    srv.restart()  # SIGTERM, same port and database
    # the trainer continues the run while the page may still be backing off
    second = trainers(srv, "restart-me", run_id=run_id, first_step=40, n_steps=60, interval=0.02)
    assert second.run_id == run_id
    page.wait_for_function("window.gradwatch.connected === true", timeout=30_000)
    page.wait_for_function("window.gradwatch.lastStep === 99", timeout=30_000)
    steps = step_list(page)
    assert steps == list(range(100)), "every step exactly once after the reconnect"
    assert page.evaluate("window.gradwatch.steps") == 100
    # the REST view agrees
    m = httpx.get(f"{srv.url}/api/runs/{run_id}/metrics", headers=srv.headers, timeout=10).json()
    assert m["step"] == list(range(100))
    # while the server was down the browser logged refused connections; nothing else may fail
    problems = [p for p in page.gradwatch_problems if "ERR_CONNECTION_REFUSED" not in p]
    assert problems == [], problems


def chart_len(page: Any, testid: str, trace: int = 0) -> int:
    return int(
        page.evaluate(
            f"(() => {{ const d = document.querySelector('[data-testid={testid}]');"
            f" return d && d.data && d.data[{trace}] ? d.data[{trace}].x.length : -1; }})()"
        )
    )


def test_set_lr_update_ratio_skipped_and_probe(
    gradwatch_server: Any, trainers: Any, browser_page: Any, tmp_path: Any
) -> None:
    page = browser_page
    srv = gradwatch_server()
    trainer = trainers(srv, "lr-and-ratios", nan_steps=(20,), update_ratio=True, guard_nonfinite=True, probe_every=10)
    login(page, srv)
    page.goto(f"{srv.url}/#run={trainer.run_id}")
    page.wait_for_function("window.gradwatch.lastStep !== null && window.gradwatch.lastStep > 25")
    assert page.locator("[data-testid=run-lr]").text_content() == "0.001"

    # set_lr: a bad value is refused on the page; a good one is posted, acked and shown applied at its step
    page.locator("[data-testid=lr-input]").fill("")
    page.locator("[data-testid=lr-apply]").click()
    page.locator("[data-testid=control-error]").wait_for(state="visible")
    page.locator("[data-testid=lr-input]").fill("-1")
    page.locator("[data-testid=lr-apply]").click()
    page.wait_for_function("document.querySelector('[data-testid=control-error]').textContent.includes('422')")
    page.locator("[data-testid=lr-input]").fill("0.0005")
    page.locator("[data-testid=lr-apply]").click()
    entry = page.locator("[data-testid=command-entry][data-type=set_lr]")
    page.wait_for_selector("[data-testid=command-entry][data-type=set_lr][data-state=applied]")
    assert trainer.commands[-1]["command"] == {"type": "set_lr", "lr": 0.0005}
    applied = trainer.acks[-1]["applied_step"]
    assert f"applied at step {applied}" in entry.text_content()
    assert "set lr → 0.0005" in entry.text_content()
    page.wait_for_function("document.querySelector('[data-testid=run-lr]').textContent === '0.0005'")

    # the update/weight ratio chart: one log-scale line per variable, the 1e-3 reference line
    page.locator("[data-testid=chart-update-ratio]").scroll_into_view_if_needed()
    page.wait_for_function("(document.querySelector('[data-testid=chart-update-ratio]').data || []).length === 6")
    # a step after the set_lr may reach the chart a moment later on a busy machine: wait for it, bounded
    page.wait_for_function(
        "Math.min(...document.querySelector('[data-testid=chart-update-ratio]').data[0].y"
        ".filter(v => v !== null)) < 0.0004"
    )
    info = page.evaluate(
        "(() => { const d = document.querySelector('[data-testid=chart-update-ratio]');"
        " return {type: d.layout.yaxis.type, ref: d.layout.shapes[0].y0,"
        " ys: d.data[0].y.filter(v => v !== null)}; })()"
    )
    assert info["type"] == "log" and info["ref"] == 1e-3
    # the first variable's ratio follows the learning rate (stored as float32 by the server)
    assert min(info["ys"]) == pytest.approx(0.0005 * 0.5, rel=1e-6)
    assert max(info["ys"]) == pytest.approx(0.001 * 0.5, rel=1e-6)

    # the skipped NaN step is marked on the global-norm chart
    page.locator("[data-testid=chart-global-norm]").scroll_into_view_if_needed()
    page.wait_for_function(
        "(() => { const d = document.querySelector('[data-testid=chart-global-norm]');"
        " return !!d.data && d.data[4].x.includes(20); })()"
    )

    # probe data (every 10 steps) appears in its own chart
    page.locator("[data-testid=chart-probe]").wait_for(state="visible")
    page.locator("[data-testid=chart-probe]").scroll_into_view_if_needed()
    page.wait_for_function("(document.querySelector('[data-testid=chart-probe]').data || []).length === 2")
    n = chart_len(page, "chart-probe")
    page.wait_for_function(
        f"document.querySelector('[data-testid=chart-probe]').data[0].x.length > {n}", timeout=20_000
    )

    # after a reload everything comes back from REST
    page.reload()
    page.wait_for_function("window.gradwatch.steps > 0")
    page.locator("[data-testid=chart-probe]").scroll_into_view_if_needed()
    page.wait_for_function("(document.querySelector('[data-testid=chart-probe]').data || []).length === 2")
    page.wait_for_selector("[data-testid=command-entry][data-type=set_lr][data-state=applied]")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(tmp_path / "lr.png"))
    assert page.gradwatch_problems == [], page.gradwatch_problems
    assert trainer.error is None, trainer.error


def shot(page: Any, tmp_path: Any, name: str) -> None:
    """Screenshot into tmp_path, or into $GRADWATCH_SCREENSHOTS when set (for looking at the design)."""
    import os
    from pathlib import Path

    where = Path(os.environ.get("GRADWATCH_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(where / name))


def highlighted(page: Any) -> list[str]:
    return list(
        page.evaluate("JSON.parse(document.querySelector('[data-testid=chart-heatmap]').dataset.highlighted || '[]')")
    )


def test_nonfinite_alert_banner_highlight_badge_and_mute(
    gradwatch_server: Any, trainers: Any, browser_page: Any, tmp_path: Any
) -> None:
    page = browser_page
    srv = gradwatch_server()
    trainer = trainers(srv, "nan-in-gamma", nan_steps=tuple(range(25, 100_000)))  # stays open
    run_id = trainer.run_id
    login(page, srv)
    page.goto(f"{srv.url}/#run={run_id}")
    page.wait_for_function("window.gradwatch.lastStep !== null && window.gradwatch.lastStep > 5")

    # the server's nonfinite rule fires at step 25; the page shows it live
    banner = page.locator("[data-testid=alert-banner]")
    banner.wait_for(state="visible", timeout=20_000)
    assert banner.get_attribute("data-kind") == "nonfinite"
    assert banner.get_attribute("data-severity") == "critical"
    text = banner.text_content()
    assert "NaN / Inf gradients" in text and "mlp/bn/gamma" in text and "first seen at step 25" in text
    remedies = page.locator("[data-testid=alert-remedies] li").all_text_contents()
    server_alerts = httpx.get(f"{srv.url}/api/runs/{run_id}/alerts", headers=srv.headers, timeout=10).json()
    assert remedies == server_alerts[0]["remedies"] and remedies
    assert server_alerts[0]["message"] in text

    entry = page.locator("[data-testid=alert-entry][data-kind=nonfinite]")
    assert entry.count() == 1
    assert entry.get_attribute("data-severity") == "critical"
    assert entry.get_attribute("data-layer") == "mlp/bn/gamma"

    # the affected variable is highlighted on the heatmap (rectangle from step 25, emphasised label)
    page.wait_for_function(
        "(() => { const d = document.querySelector('[data-testid=chart-heatmap]');"
        " return !!d.layout && d.layout.shapes.length >= 1; })()"
    )
    assert highlighted(page) == ["mlp/bn/gamma"]
    chip = page.locator("[data-testid=heatmap-highlight]")
    assert chip.count() == 1 and chip.get_attribute("data-variable") == "mlp/bn/gamma"
    shapes = page.evaluate("document.querySelector('[data-testid=chart-heatmap]').layout.shapes")
    assert shapes[0]["y0"] == 2 - 0.5 and shapes[0]["x0"] == 25 - 0.5  # row of mlp/bn/gamma, from step 25 on
    ticks = page.locator("[data-testid=chart-heatmap] .ytick text").all_text_contents()
    assert any(t.startswith("▲") and "mlp/bn/gamma" in t for t in ticks), ticks

    # the run list badge
    badge = page.locator(f"[data-testid=run-item][data-run-id='{run_id}'] [data-testid=run-item-alerts]")
    badge.wait_for()
    assert badge.get_attribute("data-severity") == "critical"

    # a second run that is not selected gets its badge live
    other = trainers(srv, "another-nan", nan_steps=tuple(range(3, 100_000)))
    other_badge = page.locator(f"[data-testid=run-item][data-run-id='{other.run_id}'] [data-testid=run-item-alerts]")
    other_badge.wait_for(timeout=20_000)
    assert other_badge.get_attribute("data-severity") == "critical"
    assert page.evaluate("window.gradwatch.runId") == run_id

    shot(page, tmp_path, "alert_nonfinite.png")

    # mute the kind: the switch shows it, the server stores it, the banner and the highlight go away
    mute = page.locator("[data-testid=alert-mute-nonfinite]")
    assert mute.get_attribute("data-muted") == "false"
    mute.click()
    page.wait_for_selector("[data-testid=alert-mute-nonfinite][data-muted=true]")
    rules = httpx.get(f"{srv.url}/api/runs/{run_id}/alert-rules", headers=srv.headers, timeout=10).json()
    assert rules["nonfinite"]["muted"] is True
    assert rules["exploding_gradients"]["muted"] is False
    banner.wait_for(state="hidden")
    page.wait_for_function(
        "JSON.parse(document.querySelector('[data-testid=chart-heatmap]').dataset.highlighted).length === 0"
    )
    assert page.locator("[data-testid=alert-entry][data-kind=nonfinite]").count() == 1  # still listed, dimmed

    # the mute survives a reload (the page reads the rules back); unmuting brings the banner back
    page.reload()
    page.wait_for_function("window.gradwatch.steps > 0")
    page.wait_for_selector("[data-testid=alert-mute-nonfinite][data-muted=true]")
    assert banner.is_hidden()
    page.locator("[data-testid=alert-mute-nonfinite]").click()
    page.wait_for_selector("[data-testid=alert-mute-nonfinite][data-muted=false]")
    banner.wait_for(state="visible")
    assert highlighted(page) == ["mlp/bn/gamma"]
    rules = httpx.get(f"{srv.url}/api/runs/{run_id}/alert-rules", headers=srv.headers, timeout=10).json()
    assert rules["nonfinite"]["muted"] is False

    # a mute made elsewhere (another page, or the API) shows here live, without a reload
    r = httpx.patch(
        f"{srv.url}/api/runs/{run_id}/alert-rules/nonfinite", json={"muted": True}, headers=srv.headers, timeout=10
    )
    assert r.status_code == 200, r.text
    page.wait_for_selector("[data-testid=alert-mute-nonfinite][data-muted=true]")
    banner.wait_for(state="hidden")

    assert page.gradwatch_problems == [], page.gradwatch_problems
    assert trainer.error is None and other.error is None


def test_alerts_resolve_and_reopen_shown_apart(gradwatch_server: Any, trainers: Any, browser_page: Any) -> None:
    """nonfinite resolves 50 clear steps after its NaN (step 25 -> 75); a NaN after that is episode 2, open."""
    page = browser_page
    srv = gradwatch_server()
    first = trainers(srv, "flapping", nan_steps=(25,), n_steps=90, interval=0.02)
    run_id = first.run_id
    login(page, srv)
    page.goto(f"{srv.url}/#run={run_id}")
    resolved = page.locator("[data-testid=alert-timeline-resolved] [data-testid=alert-entry]")
    resolved.first.wait_for(timeout=30_000)
    assert resolved.get_attribute("data-state") == "resolved"
    assert resolved.locator("[data-testid=alert-resolved-step]").text_content() == "resolved at step 75"
    assert page.locator("[data-testid=alert-timeline] [data-testid=alert-entry]").count() == 0
    assert page.locator("[data-testid=alerts-none-open]").is_visible()
    assert page.locator("[data-testid=alert-banner]").is_hidden()  # nothing is wrong now
    assert first.done.wait(30)

    again = trainers(srv, "flapping", run_id=run_id, first_step=90, nan_steps=(110,), n_steps=30, interval=0.02)
    banner = page.locator("[data-testid=alert-banner]")
    banner.wait_for(state="visible", timeout=30_000)
    assert "first seen at step 110" in banner.text_content() and "episode 2" in banner.text_content()
    opened = page.locator("[data-testid=alert-timeline] [data-testid=alert-entry]")
    assert opened.count() == 1 and opened.get_attribute("data-state") == "open"
    assert resolved.count() == 1 and resolved.get_attribute("data-state") == "resolved"
    stored = httpx.get(f"{srv.url}/api/runs/{run_id}/alerts", headers=srv.headers, timeout=10).json()
    assert [(a["state"], a["count"], a["step"]) for a in stored] == [("resolved", 1, 25), ("open", 2, 110)]
    assert opened.get_attribute("data-alert-id") == str(stored[1]["id"])
    assert page.gradwatch_problems == [], page.gradwatch_problems
    assert first.error is None and again.error is None


def test_a_model_without_batchnorm_gets_a_note_not_empty_axes(
    gradwatch_server: Any, trainers: Any, browser_page: Any
) -> None:
    page = browser_page
    srv = gradwatch_server()
    trainer = trainers(srv, "no-bn", bn_layers=[])
    login(page, srv)
    page.goto(f"{srv.url}/#run={trainer.run_id}")
    page.wait_for_function("window.gradwatch.lastStep !== null && window.gradwatch.lastStep > 5")
    chart = "document.querySelector('[data-testid=chart-bn]')"
    page.wait_for_function(f"!!{chart}.layout")
    got = page.evaluate(
        f"(() => {{ const l = {chart}.layout; return [l.annotations.map(a => a.text),"
        " l.xaxis.visible, l.yaxis.visible, l.yaxis2.visible]; })()"
    )
    assert got == [["This model has no BatchNorm layers"], False, False, False]
    assert page.gradwatch_problems == [], page.gradwatch_problems
