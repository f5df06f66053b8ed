"""Token, cookie login, Origin and Host checks, and that the token never reaches the log."""

from __future__ import annotations

import time

import httpx
import pytest
from simtrainer import closed_with, open_browser, open_trainer, recv_json, recv_until, run, start_trainer
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gradwatch.protocol import CloseCode

ROUTES = ["/api/runs", "/api/runs/1", "/api/runs/1/metrics", "/api/runs/1/commands"]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Basic abc"},
        {"Cookie": "gradwatch_token=wrong-token"},
    ],
)
def test_rest_needs_the_token(shared_server, path, headers):
    r = httpx.get(shared_server.url + path, headers=headers, timeout=5)
    assert r.status_code == 401
    assert "token" in r.json()["detail"]


def test_post_needs_the_token(shared_server):
    r = httpx.post(shared_server.url + "/api/runs/1/commands", json={"type": "pause"}, timeout=5)
    assert r.status_code == 401


def test_login_sets_strict_httponly_cookie(shared_server):
    srv = shared_server
    bad = httpx.get(srv.url + "/login", params={"token": "nope"}, timeout=5)
    assert bad.status_code == 401 and "set-cookie" not in bad.headers
    r = httpx.get(srv.url + "/login", params={"token": srv.token}, timeout=5)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"gradwatch_token={srv.token}")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    runs = httpx.get(srv.url + "/api/runs", cookies={"gradwatch_token": srv.token}, timeout=5)
    assert runs.status_code == 200


def test_login_code_works_once_and_needs_the_token(shared_server):
    srv = shared_server
    assert httpx.post(srv.url + "/api/login-codes", timeout=5).status_code == 401
    # A cookie-authenticated POST from another site is refused, as for every state-changing route.
    cross = httpx.post(
        srv.url + "/api/login-codes",
        cookies={"gradwatch_token": srv.token},
        headers={"Sec-Fetch-Site": "cross-site"},
        timeout=5,
    )
    assert cross.status_code == 403
    made = httpx.post(srv.url + "/api/login-codes", headers=srv.headers, timeout=5)
    assert made.status_code == 201 and made.json()["expires_in"] == 60
    code = made.json()["code"]
    assert srv.token not in code
    r = httpx.get(srv.url + "/login", params={"code": code}, timeout=5)
    assert r.status_code == 303 and r.headers["set-cookie"].startswith(f"gradwatch_token={srv.token}")
    again = httpx.get(srv.url + "/login", params={"code": code}, timeout=5)
    assert again.status_code == 401 and "used or expired" in again.json()["detail"]
    assert httpx.get(srv.url + "/login", timeout=5).status_code == 401  # neither token nor code


def test_login_codes_expire_and_are_bounded():
    from gradwatch.server.login_codes import LoginCodes

    codes = LoginCodes(ttl=0.05, limit=3)
    old = codes.issue()
    time.sleep(0.1)  # stays: the code must outlive its 0.05 s ttl
    assert not codes.redeem(old)  # expired
    made = [codes.issue() for _ in range(5)]
    assert [codes.redeem(c) for c in made] == [False, False, True, True, True]  # the oldest made room
    assert not codes.redeem("")
    codes.issue()
    assert not codes.redeem("斓Æ\udc80")  # any text, compared as bytes (schemathesis found a 500 here)


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ({}, 202),  # no browser headers at all (curl-like)
        ({"Origin": "ORIGIN", "Sec-Fetch-Site": "same-origin"}, 202),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),
        ({"Origin": "http://evil.example"}, 403),
    ],
)
def test_cookie_post_refused_cross_site(shared_server, extra, status):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        hdrs = {k: (srv.url if v == "ORIGIN" else v) for k, v in extra.items()}
        r = httpx.post(
            f"{srv.url}/api/runs/{run_id}/commands",
            json={"type": "pause"},
            headers=hdrs,
            cookies={"gradwatch_token": srv.token},
            timeout=5,
        )
        await ws.close()
        return r

    r = run(body())
    assert r.status_code == status, r.text


def test_bearer_post_is_not_subject_to_cookie_rules(shared_server):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        r = httpx.post(
            f"{srv.url}/api/runs/{run_id}/commands",
            json={"type": "pause"},
            headers={**srv.headers, "Origin": "http://elsewhere.example"},
            timeout=5,
        )
        await ws.close()
        return r

    assert run(body()).status_code == 202


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_trainer_ws_needs_the_token(shared_server, token):
    srv = shared_server

    async def body():
        ws = await open_trainer(srv.trainer_url, token)
        return await closed_with(ws)

    code, reason = run(body())
    assert code == CloseCode.UNAUTHORIZED
    assert "token" in reason


def test_trainer_ws_ignores_cookie(shared_server):
    srv = shared_server

    async def body():
        ws = await open_trainer(srv.trainer_url, None, Cookie=f"gradwatch_token={srv.token}")
        return await closed_with(ws)

    assert run(body())[0] == CloseCode.UNAUTHORIZED


@pytest.mark.parametrize(
    ("token", "origin", "code"),
    [
        (None, None, CloseCode.UNAUTHORIZED),
        ("wrong-token", None, CloseCode.UNAUTHORIZED),
    ],
)
def test_browser_ws_refusals(shared_server, token, origin, code):
    srv = shared_server

    async def body():
        b = await open_browser(srv.browser_url, srv.token if token == "GOOD" else token, origin=origin)
        return await closed_with(b)

    assert run(body())[0] == code


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:1", "null"])  # other port: other origin
@pytest.mark.parametrize("socket", ["trainer", "browser"])
def test_foreign_origin_refused_at_the_handshake(shared_server, socket, origin):
    """Refused with HTTP 403 before the upgrade (as Jupyter does), not accepted and then closed."""
    srv = shared_server
    url = srv.trainer_url if socket == "trainer" else srv.browser_url

    async def body():
        try:
            ws = await connect(url, origin=origin, additional_headers=srv.headers, open_timeout=10)
        except InvalidStatus as e:
            return e.response.status_code
        await ws.close()
        return 101

    assert run(body()) == 403


def test_browser_ws_accepts_same_origin_cookie(shared_server):
    srv = shared_server

    async def body():
        b = await open_browser(srv.browser_url, srv.token, origin=srv.url)
        first = await recv_json(b)
        await recv_until(b, "runs")
        await b.close()
        return first

    assert run(body())["type"] == "hello"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.2"])
def test_foreign_host_header_refused(shared_server, host):
    r = httpx.get(shared_server.url + "/api/health", headers={"Host": host}, timeout=5)
    assert r.status_code == 400


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:1234", "127.0.0.1", "[::1]:8765"])
def test_loopback_host_headers_allowed(shared_server, host):
    r = httpx.get(shared_server.url + "/api/health", headers={"Host": host}, timeout=5)
    assert r.status_code == 200


def test_allowed_host_option(gradwatch_server):
    srv = gradwatch_server(extra_args=["--allowed-host", "gw.example"])
    assert httpx.get(srv.url + "/api/health", headers={"Host": "gw.example"}, timeout=5).status_code == 200
    assert httpx.get(srv.url + "/api/health", headers={"Host": "localhost"}, timeout=5).status_code == 400
    assert httpx.get(srv.url + "/api/health", timeout=5).status_code == 200  # the bind address stays allowed


def test_token_never_logged(shared_server):
    srv = shared_server
    httpx.get(srv.url + "/login", params={"token": srv.token}, timeout=5)
    httpx.get(srv.url + "/api/runs", headers=srv.headers, timeout=5)
    httpx.get(srv.url + "/api/runs", headers={"Authorization": "Bearer " + srv.token + "x"}, timeout=5)
    lines = [line for line in srv.log().splitlines() if srv.token in line]
    assert all(line.startswith("gradwatch: serving on") for line in lines), lines
    assert len(lines) == 1
