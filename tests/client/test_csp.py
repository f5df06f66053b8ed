"""The page works under its own Content-Security-Policy (real server, real Chromium, CSP enforced)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from simtrainer import hello, record, run, send_steps, start_trainer


def test_the_page_renders_under_its_csp(gradwatch_server: Any, chromium: Any) -> None:
    srv = gradwatch_server()

    async def trainer() -> None:
        ws, _ = await start_trainer(srv.trainer_url, srv.token, hello("csp"))
        await send_steps(ws, [record(s) for s in range(20)])
        await ws.close()

    run(trainer())
    context = chromium.new_context(viewport={"width": 1400, "height": 900})  # CSP enforced
    try:
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"{srv.url}/login?token={srv.token}")
        page.locator(".js-plotly-plot .main-svg").first.wait_for(state="attached", timeout=20_000)
        assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems
    finally:
        context.close()
