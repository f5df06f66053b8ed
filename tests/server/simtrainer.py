"""A simulated trainer and browser speaking the real wire protocol with the ``websockets`` client.

Not a mock: it is exactly what the Keras callback and the page send, built by
hand so the server can be tested without TensorFlow or a browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
from waiting import async_wait_until
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gradwatch.protocol import MAX_FRAME_BYTES, PROTOCOL_VERSION, dumps

T = TypeVar("T")
RECV_TIMEOUT = 10.0
VARS = ("dense/kernel", "dense/bias", "out/kernel")


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run one async test body with a hard time bound, on a fresh event loop.

    The loop lives in its own thread: Playwright's sync API (the browser tests'
    session fixture) keeps an event loop registered as running in the main
    thread, where ``asyncio.run`` would refuse to start.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-loop") as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(coro, timeout)).result()


def hello(
    name: str = "sim",
    variables: Sequence[str] = VARS,
    bn_layers: Sequence[str] = (),
    run_id: int | None = None,
    threshold: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "run_name": name,
        "variables": list(variables),
        "bn_layers": list(bn_layers),
        "clip": {"mode": "global_norm", "threshold": threshold},
        "every": 1,
        "meta": {},
    }
    if run_id is not None:
        msg["run_id"] = run_id
    msg.update(extra)
    return msg


def record(step: int, n_vars: int = len(VARS), n_bn: int = 0, **overrides: Any) -> dict[str, Any]:
    """A plausible StepRecord whose values are simple functions of ``step`` (easy to check)."""
    rec: dict[str, Any] = {
        "step": step,
        "epoch": step // 100,
        "time": 1_700_000_000.0 + step,
        "loss": 1.0 / (step + 1),
        "lr": 0.001,
        "global_norm": float(step) + 0.5,
        "clip_mode": "global_norm",
        "clip_threshold": None,
        "clip_scale": 1.0,
        "clipped": False,
        "clipped_fraction": None,
        "steps_per_sec": 10.0,
        "grad_norm": [float(step) + i for i in range(n_vars)],
        "grad_nan": [0] * n_vars,
        "grad_inf": [0] * n_vars,
        "weight_nonfinite": 0,
        "loss_nonfinite": False,
        "bn": [[float(step)] * 8 for _ in range(n_bn)],
    }
    rec.update(overrides)
    return rec


async def recv_json(ws: ClientConnection, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
    data = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    assert isinstance(data, dict)
    return data


async def drain(ws: ClientConnection, quiet: float = 0.5) -> list[dict[str, Any]]:
    """Every message that arrives until none has for ``quiet`` seconds."""
    out: list[dict[str, Any]] = []
    with contextlib.suppress(TimeoutError):
        while True:
            out.append(await recv_json(ws, timeout=quiet))
    return out


async def recv_until(ws: ClientConnection, type_: str, timeout: float = RECV_TIMEOUT, **match: Any) -> dict[str, Any]:
    """The next message of ``type_`` whose fields equal ``match`` (others are skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg = await recv_json(ws, max(0.01, deadline - loop.time()))
        if msg.get("type") == type_ and all(msg.get(k) == v for k, v in match.items()):
            return msg


async def taken(ws: ClientConnection, timeout: float = 30.0) -> None:
    """Return once the server has handled every frame sent on ``ws`` so far (a ``mark`` round trip):
    ``send`` only hands a frame to the socket, so a REST read right after it may not see it yet."""
    await ws.send(dumps({"type": "mark", "id": 1}))
    await recv_until(ws, "marked", timeout=timeout, id=1)


async def until(read: Callable[[], T], want: T, timeout: float = 30.0) -> T:
    """Poll ``read()`` (a blocking REST read, say) until it returns ``want``; fail after ``timeout`` s."""
    await async_wait_until(lambda: read() == want, timeout, message=f"{want!r}")
    return want


def run_status(srv: Any, run_id: int) -> str:
    return str(httpx.get(f"{srv.url}/api/runs/{run_id}", headers=srv.headers, timeout=10).json()["status"])


async def hang_up(srv: Any, ws: ClientConnection, run_id: int) -> None:
    """Close the trainer's connection and return once the server has recorded it (the run reads
    "disconnected"): what is sent or posted next meets a run with no trainer, not the closing link."""
    await ws.close()
    await until(lambda: run_status(srv, run_id), "disconnected")


async def closed_with(ws: ClientConnection, timeout: float = RECV_TIMEOUT) -> tuple[int | None, str]:
    """Wait for the server to close ``ws``; return (code, reason). Other messages are skipped."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as e:
        return (e.rcvd.code if e.rcvd else None), (e.rcvd.reason if e.rcvd else "")
    raise AssertionError("unreachable")


async def open_trainer(url: str, token: str | None, **headers: str) -> ClientConnection:
    hdrs = dict(headers)
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    return await connect(
        url, additional_headers=hdrs, max_size=MAX_FRAME_BYTES, compression=None, open_timeout=RECV_TIMEOUT
    )


async def start_trainer(url: str, token: str, msg: dict[str, Any] | None = None) -> tuple[ClientConnection, int]:
    """Connect, say hello, return (connection, run_id)."""
    ws = await open_trainer(url, token)
    await ws.send(dumps(msg or hello()))
    welcome = await recv_json(ws)
    assert welcome["type"] == "welcome", welcome
    assert welcome["protocol"] == PROTOCOL_VERSION
    return ws, int(welcome["run_id"])


async def send_steps(ws: ClientConnection, records: list[dict[str, Any]]) -> None:
    await ws.send(dumps({"type": "steps", "records": records}))


async def open_browser(
    url: str, token: str | None, origin: str | None = None, cookie: bool = True, max_queue: int | None = 16
) -> ClientConnection:
    """Browser-like connection: token in the ``gradwatch_token`` cookie, optional Origin.

    ``max_queue=None`` reads every frame off the socket as soon as the loop runs,
    however slowly the test consumes them (a browser with a fast network stack).
    """
    hdrs = {}
    if token is not None:
        hdrs["Cookie" if cookie else "Authorization"] = f"gradwatch_token={token}" if cookie else f"Bearer {token}"
    return await connect(
        url,
        additional_headers=hdrs,
        origin=origin,
        compression=None,  # type: ignore[arg-type]
        open_timeout=RECV_TIMEOUT,
        max_queue=max_queue,
    )
