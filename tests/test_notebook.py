"""``gradwatch.notebook`` without a kernel: finding or starting the server, the frame's HTML, bad input.

The real kernel and browser run in tests/client/test_notebook.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import gradwatch.notebook as gn
from gradwatch.tokens import SERVER_ENV, TOKEN_ENV, resolve_server


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    for name in (SERVER_ENV, TOKEN_ENV, "GRADWATCH_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GRADWATCH_TOKEN_FILE", str(tmp_path / "no-token"))
    # Nothing answers on the default port in these tests, whatever the machine runs there.
    monkeypatch.setattr(gn, "DEFAULT_SERVER", "http://127.0.0.1:9")
    yield tmp_path
    gn.stop()


def test_embedded_server_is_started_once_and_published_to_monitors(clean_env: Path) -> None:
    first = gn.ensure_server(db=clean_env / "nb.db")
    assert first.embedded and first.token
    assert gn.ensure_server() == first  # the same server for every later show()
    # A GradientMonitor made afterwards finds it with no arguments.
    assert resolve_server() == first.url
    assert httpx.get(first.url + "/api/health").json()["status"] == "ok"
    html = gn.iframe_html(first, run=3, height=450)
    assert first.token not in html and 'height="450"' in html  # the saved output never holds the token
    (code,) = re.findall(r"/login\?code=([\w-]+)#run=3", html)
    # The frame's first load logs in (cookie set, back to the page keeping #run=3); a second use fails.
    login = httpx.get(f"{first.url}/login", params={"code": code})
    assert login.status_code == 303 and login.headers["location"] == "/"
    assert "gradwatch_token" in login.cookies
    assert httpx.get(f"{first.url}/login", params={"code": code}).status_code == 401
    gn.stop()
    assert resolve_server() == "http://127.0.0.1:8765"  # unpublished again
    with pytest.raises(httpx.TransportError):
        httpx.get(first.url + "/api/health", timeout=2)


def test_a_configured_server_is_used_and_its_token_never_written_out(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SERVER_ENV, "http://127.0.0.1:4321/")
    monkeypatch.setenv(TOKEN_ENV, "a-secret-token-of-the-user")
    dash = gn.ensure_server()
    assert (dash.url, dash.embedded, dash.token) == ("http://127.0.0.1:4321", False, "a-secret-token-of-the-user")
    html = gn.iframe_html(dash)  # nothing answers there: no code, the page will ask to log in
    assert "a-secret-token-of-the-user" not in html and 'data-src="http://127.0.0.1:4321/"' in html


def test_show_outside_ipython_prints_the_url(clean_env: Path) -> None:
    # A plain interpreter (a script, a front end without IPython's display): one line with the URL.
    env = {**os.environ, SERVER_ENV: "http://127.0.0.1:4321"}
    code = "import gradwatch.notebook as gn; gn.show(run=7)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "gradwatch dashboard: http://127.0.0.1:4321/#run=7"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"run": 0}, "run=0 must be a run id"), ({"run": "3"}, "run='3'"), ({"height": 20}, "height=20 must be")],
)
def test_show_refuses_bad_arguments_with_the_fix(clean_env: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gn.show(**kwargs)


def test_magic_bad_flag_is_one_clear_error(clean_env: Path) -> None:
    with pytest.raises(ValueError, match=r"%gradwatch '--hieght 3'.*usage: %gradwatch"):
        gn.magic("--hieght 3")
    with pytest.raises(ValueError, match="invalid int value"):
        gn.magic("--run abc")
