"""The page on its own: client/ served by a throwaway stdlib static server,
REST answered by Playwright routes and the websocket by a Playwright
websocket route. This pins the page's side of the contract (subscribe before
REST, merge without duplicates, wire NaN spelling, protocol check, reconnect
and backfill, 4xx details, text-only rendering) without the real server; the
real end-to-end run is in test_dashboard.py.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from gradwatch.protocol import ALERT_KINDS, PROTOCOL_VERSION

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

CLIENT = Path(__file__).resolve().parents[2] / "client"
XSS = "<img src=x onerror=alert(1)>"
VARS = ["dense/kernel", "<b>dense</b>/bias"]
BN = ["bn"]


def plotly_js() -> Path:
    spec = importlib.util.find_spec("plotly")
    assert spec is not None and spec.submodule_search_locations, "plotly is needed for the page"
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


class _Handler(SimpleHTTPRequestHandler):
    def translate_path(self, path: str) -> str:
        p = urlparse(path).path
        if p == "/":
            return str(CLIENT / "index.html")
        if p == "/static/plotly.min.js":
            return str(plotly_js())
        if p.startswith("/static/") and "/" not in p[len("/static/") :]:
            return str(CLIENT / p[len("/static/") :])
        return str(CLIENT / "__missing__")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def static_url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(CLIENT)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def record(step: int, nan: bool = False) -> dict[str, Any]:
    return {
        "update_ratio": [None, None] if nan else [1e-3 * (1 + step / 10), 2e-4],
        "skipped": nan,
        "step": step,
        "epoch": 0,
        "time": 1.7e9 + step,
        "loss": 1.0 / (step + 1),
        "lr": 0.01,
        "global_norm": "NaN" if nan else 0.5 + step / 100,
        "clip_mode": "global_norm",
        "clip_threshold": 1.0,
        "clip_scale": 1.0,
        "clipped": False,
        "clipped_fraction": None,
        "steps_per_sec": 10.0,
        "grad_norm": [0.1, "Infinity" if nan else 0.01],
        "grad_nan": [0, 2 if nan else 0],
        "grad_inf": [0, 1 if nan else 0],
        "weight_nonfinite": 0,
        "loss_nonfinite": False,
        "bn": [[0.0, -1, 1, 0.1, 1.0, 0.5, 1.5, 0.1]],
    }


def columns(records: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [
        "step",
        "epoch",
        "time",
        "loss",
        "lr",
        "global_norm",
        "clip_threshold",
        "clip_scale",
        "clipped",
        "clipped_fraction",
        "steps_per_sec",
        "weight_nonfinite",
        "loss_nonfinite",
    ]
    out: dict[str, Any] = {k: [r[k] for r in records] for k in keys}
    out["grad_norm"] = {v: [r["grad_norm"][i] for r in records] for i, v in enumerate(VARS)}
    out["nonfinite"] = {v: [r["grad_nan"][i] + r["grad_inf"][i] for r in records] for i, v in enumerate(VARS)}
    out["update_ratio"] = {v: [r["update_ratio"][i] for r in records] for i, v in enumerate(VARS)}
    out["skipped"] = [r["skipped"] for r in records]
    out["bn"] = {
        "bn": {"moving_mean": [r["bn"][0][0] for r in records], "moving_variance": [r["bn"][0][4] for r in records]}
    }
    out.update(run_id=1, gaps=[], downsampled=False)
    return out


class FakeBackend:
    """REST routes + a websocket route speaking the browser side of the contract."""

    def __init__(self, page: Any, protocol: int = PROTOCOL_VERSION) -> None:
        self.protocol = protocol
        self.records = [record(i) for i in range(10)]
        self.events: list[str] = []
        self.sockets: list[Any] = []
        self.metrics_queries: list[dict[str, list[str]]] = []
        self.alerts: list[dict[str, Any]] = []
        self.rules: dict[str, Any] | None = None  # None: the server has no alert-rules route
        self.patches: list[tuple[str, Any]] = []
        self.probe: dict[str, Any] = {"step": [], "dead_relu": {}, "bn_gap": {}}
        self.summary = {"id": 1, "name": XSS, "status": "running", "step": 9, "created_at": 1.7e9, "updated_at": 1.7e9}
        page.route("**/api/**", self.rest)
        page.route_web_socket("**/ws/browser", self.websocket)

    def detail(self) -> dict[str, Any]:
        return {
            **self.summary,
            "variables": VARS,
            "bn_layers": BN,
            "clip": {"mode": "global_norm", "threshold": 1.0},
            "paused": False,
            "every": 1,
            "meta": {},
            "gaps": [],
        }

    def rest(self, route: Any) -> None:
        url = urlparse(route.request.url)
        path = url.path
        if path == "/api/runs":
            body: Any = [self.summary]
        elif path == "/api/runs/1":
            self.events.append("GET run")
            body = self.detail()
        elif path == "/api/runs/1/metrics":
            q = parse_qs(url.query)
            self.metrics_queries.append(q)
            since = int(q["since_step"][0]) if "since_step" in q else 0
            body = columns([r for r in self.records if r["step"] >= since])
            if self.rules is not None:
                body["probe"] = self.probe
        elif path == "/api/runs/1/commands" and route.request.method == "GET":
            body = []
        elif path == "/api/runs/1/alerts" and self.rules is not None:
            body = self.alerts
        elif path == "/api/runs/1/alert-rules" and self.rules is not None:
            body = self.rules
        elif path.startswith("/api/runs/1/alert-rules/") and route.request.method == "PATCH" and self.rules is not None:
            kind = path.rsplit("/", 1)[1]
            change = json.loads(route.request.post_data or "{}")
            self.patches.append((kind, change))
            self.rules[kind] = {**self.rules[kind], **change}
            body = self.rules[kind]
        elif path == "/api/runs/1/commands":
            assert route.request.headers["content-type"] == "application/json"
            route.fulfill(
                status=409,
                content_type="application/json",
                body=json.dumps({"detail": "run 1 is finished; it takes no more commands"}),
            )
            return
        else:
            route.fulfill(status=404, content_type="application/json", body=json.dumps({"detail": "no such thing"}))
            return
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    def websocket(self, ws: Any) -> None:
        self.sockets.append(ws)

        def on_message(message: str | bytes) -> None:
            msg = json.loads(message)
            if msg["type"] == "subscribe":
                self.events.append(f"subscribe {msg['run_id']}")
                # live records that overlap what REST will return
                ws.send(json.dumps({"type": "steps", "run_id": 1, "records": self.records[-3:]}))

        ws.on_message(on_message)
        ws.send(json.dumps({"type": "hello", "protocol": self.protocol}))
        ws.send(json.dumps({"type": "runs", "runs": [self.summary]}))

    def push(self, *steps: int, nan: bool = False) -> None:
        recs = [record(s, nan=nan) for s in steps]
        self.records.extend(recs)
        self.sockets[-1].send(json.dumps({"type": "steps", "run_id": 1, "records": recs}))


def test_page_merges_live_and_rest_and_renders_text(static_url: str, browser_page: Any) -> None:
    page = browser_page
    backend = FakeBackend(page)
    page.goto(static_url + "/")
    page.wait_for_function(
        "window.gradwatch.connected && window.gradwatch.runId === 1 && window.gradwatch.steps === 10"
    )
    assert page.evaluate("location.hash") == "#run=1"
    # subscribe went out before the REST fetch of the run
    assert backend.events.index("subscribe 1") < backend.events.index("GET run")
    assert backend.metrics_queries[0]["max_points"] == ["2000"]

    # names are text
    assert page.locator("[data-testid=run-item-name]").text_content() == XSS
    assert page.locator("[data-testid=run-name]").text_content() == XSS
    assert page.locator("img").count() == 0
    ticks = page.evaluate(
        "[...document.querySelectorAll('[data-testid=chart-heatmap] .ytick text')].map(t => t.textContent)"
    )
    assert "<b>dense</b>/bias" in ticks

    # a run with a BatchNorm layer to probe and no probe yet: its probe panel says what it waits for
    probe = page.locator("[data-testid=chart-probe]")
    probe.wait_for(state="visible")
    probe.scroll_into_view_if_needed()  # off-screen charts are not drawn
    page.wait_for_function("!!document.querySelector('[data-testid=chart-probe]').layout")
    notes = page.evaluate("document.querySelector('[data-testid=chart-probe]').layout.annotations.map(a => a.text)")
    assert len(notes) == 1 and notes[0].startswith("Waiting for the first probe"), notes
    page.locator("[data-testid=chart-heatmap]").scroll_into_view_if_needed()

    # live records, duplicates dropped, wire NaN/Infinity decoded and flagged
    backend.push(10, 11)
    backend.push(11, 12)
    page.wait_for_function("window.gradwatch.lastStep === 12")
    assert page.evaluate("window.gradwatch.steps") == 13
    assert page.locator("[data-testid=nan-banner]").is_hidden()
    backend.push(13, nan=True)
    banner = page.locator("[data-testid=nan-banner]")
    banner.wait_for(state="visible")
    assert "<b>dense</b>/bias" in banner.text_content()
    assert "13" in banner.text_content()
    page.wait_for_function("document.querySelector('[data-testid=chart-heatmap]').data[0].x.length === 14")

    # a 4xx is shown with the server's detail
    page.locator("[data-testid=btn-stop]").click()
    err = page.locator("[data-testid=control-error]")
    err.wait_for(state="visible")
    assert "409" in err.text_content() and "run 1 is finished" in err.text_content()

    # "too slow": the page reconnects and backfills from REST since its last step
    backend.records.extend(record(s) for s in (14, 15, 16))  # sent while the page was away
    backend.sockets[-1].close(code=4408, reason="too slow")
    page.wait_for_function("window.gradwatch.connected === false")
    page.wait_for_function("window.gradwatch.connected === true && window.gradwatch.lastStep === 16")
    assert backend.metrics_queries[-1]["since_step"] == ["14"]
    steps = page.evaluate("window.gradwatch._debug.state.store.c.step")
    assert steps == list(range(17))
    assert page.gradwatch_problems == [], page.gradwatch_problems


def test_protocol_mismatch_is_reported(static_url: str, browser_page: Any) -> None:
    page = browser_page
    FakeBackend(page, protocol=PROTOCOL_VERSION + 1)
    page.goto(static_url + "/")
    fatal = page.locator("[data-testid=fatal-error]")
    fatal.wait_for(state="visible")
    assert "protocol" in fatal.text_content() and "Reload" in fatal.text_content()
    assert page.locator("[data-testid=connection-status]").get_attribute("data-state") == "error"
    assert page.evaluate("window.gradwatch.connected") is False


def test_hooks_exist(static_url: str, browser_page: Any) -> None:
    page = browser_page
    FakeBackend(page)
    page.goto(static_url + "/")
    page.wait_for_function("window.gradwatch.steps === 10")
    for testid in (
        "connection-status",
        "run-list",
        "run-item",
        "btn-pause",
        "btn-resume",
        "btn-stop",
        "clip-mode",
        "clip-threshold",
        "clip-apply",
        "command-log",
        "run-status",
        "run-clip",
        "nan-banner",
        "chart-heatmap",
        "chart-global-norm",
        "chart-nonfinite",
        "chart-bn",
        "chart-loss-lr",
        "alert-banner",
        "lr-input",
        "lr-apply",
        "chart-update-ratio",
        "chart-probe",
        "alert-timeline",
        *(f"alert-mute-{k}" for k in KINDS),
    ):
        assert page.locator(f"[data-testid={testid}]").count() >= 1, testid
    assert page.locator("[data-testid=run-status]").text_content() == "running"
    assert page.locator("[data-testid=clip-mode]").input_value() == "global_norm"
    assert page.locator("[data-testid=clip-threshold]").input_value() == "1"
    assert set(page.evaluate("Object.keys(window.gradwatch)")) >= {"steps", "lastStep", "runId", "connected"}


KINDS = list(ALERT_KINDS)


def alert(id_: int, kind: str, severity: str, step: int, layer: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "id": id_,
        "run_id": 1,
        "kind": kind,
        "severity": severity,
        "step": step,
        "last_step": step,
        "layer": layer,
        "layers": [layer] if layer else [],
        "evidence": {"ratio": 1e-9, "note": XSS},
        "message": f"{kind} at {XSS}",
        "remedies": ["Lower the learning rate", XSS],
        "count": 1,
        "created_at": 1.7e9 + step,
        "updated_at": 1.7e9 + step,
        "state": "open",
        "resolved_step": None,
        "latest": None,
        **extra,
    }


def test_a_resolved_alert_shows_as_resolved(static_url: str, browser_page: Any) -> None:
    """An alert the server resolves (``state``, ``resolved_step``) leaves the banner for the resolved list."""
    page = browser_page
    backend = FakeBackend(page)
    backend.rules = {k: {"muted": False, "params": {}} for k in KINDS}
    raised = alert(1, "vanishing_gradients", "warning", 4, "dense/kernel")
    backend.alerts = [raised]
    page.goto(static_url + "/")
    page.wait_for_function("window.gradwatch.steps === 10")
    page.locator("[data-testid=alert-banner]").wait_for(state="visible")
    resolved = {**raised, "state": "resolved", "resolved_step": 9, "updated_at": raised["updated_at"] + 5}
    backend.sockets[-1].send(json.dumps({"type": "alert", "run_id": 1, "alert": resolved}))
    entry = page.locator("[data-testid=alert-timeline-resolved] [data-testid=alert-entry]")
    entry.wait_for()
    assert entry.get_attribute("data-state") == "resolved"
    assert entry.locator("[data-testid=alert-resolved-step]").text_content() == "resolved at step 9"
    page.locator("[data-testid=alert-banner]").wait_for(state="hidden")
    assert page.locator("[data-testid=run-item-alerts]").count() == 0


def test_alerts_highlights_mute_lr_and_new_charts(static_url: str, browser_page: Any, tmp_path: Path) -> None:
    page = browser_page
    backend = FakeBackend(page)
    backend.rules = {k: {"muted": False, "params": {"threshold": 1.0}} for k in KINDS}
    backend.alerts = [alert(1, "vanishing_gradients", "warning", 4, "dense/kernel")]
    backend.probe = {"step": [0, 5], "dead_relu": {"dense": [0.1, 0.4]}, "bn_gap": {"bn": [0.2, None]}}
    page.goto(static_url + "/")
    page.wait_for_function("window.gradwatch.steps === 10")

    # REST alert: banner, timeline entry, highlighted row, run list badge
    banner = page.locator("[data-testid=alert-banner]")
    banner.wait_for(state="visible")
    assert banner.get_attribute("data-kind") == "vanishing_gradients"
    assert "Vanishing gradients" in banner.text_content()
    assert "step 4" in banner.text_content()
    assert page.locator("[data-testid=alert-remedies] li").all_text_contents() == ["Lower the learning rate", XSS]
    entry = page.locator("[data-testid=alert-entry]")
    assert entry.count() == 1
    assert entry.get_attribute("data-layer") == "dense/kernel"
    assert entry.get_attribute("data-severity") == "warning"
    heat = page.locator("[data-testid=chart-heatmap]")
    page.wait_for_function(
        "JSON.parse(document.querySelector('[data-testid=chart-heatmap]').dataset.highlighted).includes('dense/kernel')"
    )
    page.wait_for_function("document.querySelector('[data-testid=chart-heatmap]').layout.shapes.length >= 1")
    badge = page.locator("[data-testid=run-item-alerts]")
    assert badge.text_content() == "▲ 1" and badge.get_attribute("data-severity") == "warning"

    # a live critical alert on the other variable wins the banner; both rows highlighted
    backend.push(10, 11, 12)
    page.wait_for_function("window.gradwatch.lastStep === 12")
    crit = alert(2, "nonfinite", "critical", 12, VARS[1])
    backend.sockets[-1].send(json.dumps({"type": "alert", "run_id": 1, "alert": crit}))
    page.wait_for_function("document.querySelector('[data-testid=alert-banner]').dataset.kind === 'nonfinite'")
    assert banner.get_attribute("data-severity") == "critical"
    assert "+1 more open" in banner.text_content()
    kinds = page.locator("[data-testid=alert-entry]").evaluate_all("es => es.map(e => e.dataset.kind)")
    assert kinds == ["nonfinite", "vanishing_gradients"], "newest first"
    page.wait_for_function(
        "JSON.parse(document.querySelector('[data-testid=chart-heatmap]').dataset.highlighted).length === 2"
    )
    assert page.locator("[data-testid=heatmap-highlight]").count() == 2
    ticks = heat.locator(".ytick text").all_text_contents()
    assert any("<b>dense</b>/bias" in t for t in ticks), ticks  # still literal text, emphasised
    assert badge.get_attribute("data-severity") == "critical" and badge.text_content() == "▲ 2"
    # an update of the same alert (last_step, latest) replaces it in place; what raised it stays shown
    backend.sockets[-1].send(
        json.dumps(
            {
                "type": "alert",
                "run_id": 1,
                "alert": {
                    **crit,
                    "last_step": 14,
                    "latest": {"step": 14, "evidence": {}, "message": "still NaN"},
                    "updated_at": crit["updated_at"] + 2,
                },
            }
        )
    )
    page.wait_for_function(
        "document.querySelector('[data-testid=alert-banner-latest]').textContent === 'Update at step 14: still NaN'"
    )
    assert crit["message"] in banner.text_content()
    assert page.locator("[data-testid=alert-entry]").count() == 2

    # mute the critical kind: PATCH, switch shows muted, banner falls back to the warning
    mute = page.locator("[data-testid=alert-mute-nonfinite]")
    assert mute.get_attribute("data-muted") == "false"
    mute.click()
    page.wait_for_selector("[data-testid=alert-mute-nonfinite][data-muted=true]")
    assert backend.patches == [("nonfinite", {"muted": True})]
    page.wait_for_function(
        "document.querySelector('[data-testid=alert-banner]').dataset.kind === 'vanishing_gradients'"
    )
    page.wait_for_function(
        "JSON.parse(document.querySelector('[data-testid=chart-heatmap]').dataset.highlighted).length === 1"
    )
    page.locator("[data-testid=alert-mute-nonfinite]").click()
    page.wait_for_selector("[data-testid=alert-mute-nonfinite][data-muted=false]")
    page.wait_for_function("document.querySelector('[data-testid=alert-banner]').dataset.kind === 'nonfinite'")

    # update ratio chart (log, 1e-3 reference), skipped steps on the global chart, probe chart
    page.locator("[data-testid=chart-update-ratio]").scroll_into_view_if_needed()
    page.wait_for_function("document.querySelector('[data-testid=chart-update-ratio]').data")
    ratio = page.evaluate(
        "(() => { const d = document.querySelector('[data-testid=chart-update-ratio]');"
        " return {n: d.data.length, type: d.layout.yaxis.type, y0: d.layout.shapes[0].y0}; })()"
    )
    assert ratio == {"n": 2, "type": "log", "y0": 1e-3}
    backend.push(13, nan=True)
    page.wait_for_function(
        "(() => { const d = document.querySelector('[data-testid=chart-global-norm]');"
        " return !!d.data && d.data[4].x.includes(13); })()"
    )
    page.locator("[data-testid=chart-probe]").wait_for(state="visible")
    page.locator("[data-testid=chart-probe]").scroll_into_view_if_needed()  # off-screen charts are not drawn
    backend.sockets[-1].send(
        json.dumps(
            {"type": "probe", "run_id": 1, "probe": {"step": 10, "dead_relu": {"dense": 0.5}, "bn_gap": {"bn": 0.3}}}
        )
    )
    page.wait_for_function("(document.querySelector('[data-testid=chart-probe]').data || [])[0]?.x.length === 3")

    # learning rate: validated on the page, then posted
    page.locator("[data-testid=lr-input]").fill("")
    page.locator("[data-testid=lr-apply]").click()
    err = page.locator("[data-testid=control-error]")
    err.wait_for(state="visible")
    assert "learning rate" in err.text_content()

    # nothing from the alert texts became markup
    assert page.locator("img").count() == 0
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(tmp_path / "alerts_static.png"))
    assert page.gradwatch_problems == [], page.gradwatch_problems


def test_gradient_accumulation_update_steps_are_told_apart(static_url: str, browser_page: Any) -> None:
    page = browser_page
    backend = FakeBackend(page)
    page.goto(static_url + "/")
    page.wait_for_function("window.gradwatch.connected && window.gradwatch.steps === 10")
    chart = "document.querySelector('[data-testid=chart-global-norm]')"
    assert page.evaluate(f"{chart}.data[0].name") == "global norm"  # no accumulation: nothing else said
    recs = [
        {**record(s), "micro_step": s % 2 == 0, "accumulated_norm": None if s % 2 == 0 else 0.25 + s / 100}
        for s in range(10, 14)
    ]
    backend.records.extend(recs)
    backend.sockets[-1].send(json.dumps({"type": "steps", "run_id": 1, "records": recs}))
    page.wait_for_function(f"window.gradwatch.lastStep === 13 && {chart}.data[5].showlegend === true")
    assert page.evaluate(f"{chart}.data[0].name") == "global norm (each micro-batch)"
    trace = page.evaluate(f"(() => {{ const t = {chart}.data[5]; return [t.name, t.x, t.y]; }})()")
    name, xs, ys = trace
    assert name == "averaged gradient (update step)"
    assert [(x, y) for x, y in zip(xs, ys) if y is not None] == [(11, 0.36), (13, 0.38)]
    assert page.evaluate("window.gradwatch._debug.state.store.c.micro").count(1) == 2
    assert page.gradwatch_problems == [], page.gradwatch_problems
