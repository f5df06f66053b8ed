"""``create_app(config)``: the FastAPI application (REST, websockets, static page)."""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from gradwatch.protocol import (
    ALERT_KINDS,
    BROWSER_PATH,
    PROTOCOL_VERSION,
    TRAINER_PATH,
    AlertRuleView,
    AlertView,
    Command,
    CommandView,
    RunSummary,
    dumps,
)
from gradwatch.tokens import TOKEN_ENV, token_proof

from .alerting import PatchError, UnknownKind
from .auth import COOKIE_NAME, HostCheckMiddleware, presented_token, require_token, token_matches
from .config import ServerConfig
from .errors import RunFinished, RunNotFound
from .export import MEDIA_TYPES, ExportFormat
from .export import filename as export_name
from .export import stream as export_stream
from .guard import RequestGuardMiddleware
from .labels import RunLabels
from .login_codes import LoginCodes
from .service import Gradwatch
from .static import add_static_routes
from .views import AlertRulePatch, CommandAccepted, ErrorBody, Health, LoginCode, Metrics, RunDetail, command_view
from .ws_browser import browser_endpoint
from .ws_trainer import trainer_endpoint

COOKIE_MAX_AGE = 30 * 24 * 3600
Auth = Annotated[str, Depends(require_token)]
#: SQLite integers are signed 64-bit: a larger id or step is a 422, not an overflow deep in the store.
MAX_DB_INT = 2**63 - 1
RunId = Annotated[int, Path(ge=0, le=MAX_DB_INT, description="run id")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or wrong token"},
    404: {"model": ErrorBody, "description": "no such run"},
}


def _json(body: Any, status_code: int = 200) -> Response:
    return Response(dumps(body), status_code=status_code, media_type="application/json")


def _validation_message(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """One readable sentence (where, what, the offending value) plus a JSON-safe error list."""
    parts, clean = [], []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        value = err.get("input")
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "json_invalid":
            loc, value = [], None
            msg = f"the body is not valid JSON ({err.get('ctx', {}).get('error', 'decode error')})"
        elif isinstance(value, float) and not math.isfinite(value):
            msg = "must be a finite number"
        msg = msg.removeprefix("Value error, ")
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {msg}" + ("" if err.get("type") == "json_invalid" else f" (got {shown})"))
        safe = value if isinstance(value, (int, float, str, bool, type(None))) else shown
        clean.append({"loc": loc, "msg": msg, "input": safe})
    return "invalid request: " + "; ".join(parts), clean


def create_app(config: ServerConfig) -> FastAPI:
    """The application for ``config``; it needs a token (``config.token`` or ``$GRADWATCH_TOKEN``)."""
    token = config.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise ValueError(
            "create_app needs a token: pass ServerConfig(token=...) or set GRADWATCH_TOKEN "
            "(GradwatchServer generates one when neither is given)"
        )
    gw = Gradwatch(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    app = FastAPI(
        title="gradwatch",
        version="0.1.0",
        lifespan=lifespan,
        description="Live gradient-health monitoring for Keras training. See docs/api.md.",
    )
    app.state.token = token
    app.state.login_codes = LoginCodes()
    app.state.gradwatch = gw
    # Added last, runs first: the Host check, then the token before any body (guard.py).
    app.add_middleware(RequestGuardMiddleware, token=token, max_body=config.max_request_bytes)
    app.add_middleware(HostCheckMiddleware, allowed_hosts=config.effective_allowed_hosts)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        message, errors = _validation_message(list(exc.errors()))
        return _json({"detail": message, "errors": errors}, 422)

    @app.exception_handler(RunNotFound)
    async def on_not_found(request: Request, exc: RunNotFound) -> Response:
        return _json({"detail": f"run {exc.args[0]} does not exist; GET /api/runs lists the runs"}, 404)

    @app.exception_handler(sqlite3.OperationalError)
    async def on_store_failure(request: Request, exc: sqlite3.OperationalError) -> Response:
        return _json(
            {
                "detail": f"the server cannot write its database now ({exc}); try again later "
                "(GET /api/health tells when it can)"
            },
            503,
        )

    @app.get("/api/health", response_model=Health, response_model_exclude_none=True, tags=["api"])
    async def health(
        request: Request,
        proof: Annotated[
            str | None,
            Query(
                pattern="^[0-9a-f]{32}$",
                description="a client's nonce: the answer proves this server knows the token (tokens.proves_token)",
            ),
        ] = None,
    ) -> Health:
        """No token needed. ``degraded`` while the store cannot write; the store's details need the token."""
        store = gw.queries.store_health()
        token, _ = presented_token(request.headers, request.cookies)
        shown = store if token_matches(token, app.state.token) else None
        port = int((request.scope.get("server") or ("", 0))[1] or 0)  # the socket's own port, not the Host header
        return Health(
            status="ok" if store.writing else "degraded",
            protocol=PROTOCOL_VERSION,
            store=shown,
            proof=None if proof is None else token_proof(app.state.token, proof, port),
        )

    @app.get("/api/runs", response_model=list[RunSummary], responses=_ERRORS, tags=["api"])
    async def list_runs(_: Auth) -> list[RunSummary]:
        return await gw.queries.list_runs()

    @app.get("/api/runs/{run_id}", response_model=RunDetail, responses=_ERRORS, tags=["api"])
    async def get_run(run_id: RunId, _: Auth) -> Response:
        return Response(await gw.queries.run_detail_json(run_id), media_type="application/json")

    @app.patch(
        "/api/runs/{run_id}",
        response_model=RunSummary,
        tags=["api"],
        responses={
            **_ERRORS,
            403: {"model": ErrorBody, "description": "cross-site request"},
            422: {"model": ErrorBody, "description": "bad tags or note"},
        },
    )
    async def label_run(run_id: RunId, labels: RunLabels, _: Auth) -> RunSummary:
        """Set the run's tags and/or note (a field left out is kept)."""
        return await gw.label_run(run_id, labels.changes())

    @app.get("/api/runs/{run_id}/metrics", response_model=Metrics, responses=_ERRORS, tags=["api"])
    async def get_metrics(
        run_id: RunId,
        _: Auth,
        since_step: Annotated[int | None, Query(ge=0, le=MAX_DB_INT, description="first step, inclusive")] = None,
        until_step: Annotated[int | None, Query(ge=0, le=MAX_DB_INT, description="last step, inclusive")] = None,
        max_points: Annotated[int | None, Query(ge=2, le=1_000_000, description="min/max-downsample above")] = None,
        omit_empty: Annotated[
            bool, Query(description="leave out all-zero `nonfinite` and never-measured `update_ratio` series")
        ] = False,
    ) -> Response:
        body = await gw.queries.metrics(run_id, since_step, until_step, max_points, omit_empty)
        return Response(body, media_type="application/json")

    @app.get(
        "/api/runs/{run_id}/export",
        tags=["api"],
        response_class=StreamingResponse,
        responses={
            **_ERRORS,
            200: {
                "description": "the run's steps, one row per step (docs/api.md)",
                "content": {t: {} for t in MEDIA_TYPES.values()},
            },
            422: {"model": ErrorBody, "description": "unknown format"},
        },
    )
    async def export_run(
        run_id: RunId,
        _: Auth,
        format: Annotated[ExportFormat, Query(description="parquet or csv")] = "parquet",
    ) -> StreamingResponse:
        run = await gw.queries.get_run(run_id)  # 404 before anything is streamed
        return StreamingResponse(
            export_stream(gw.store, run, format),
            media_type=MEDIA_TYPES[format],
            headers={"Content-Disposition": f'attachment; filename="{export_name(run, format)}"'},
        )

    @app.post(
        "/api/runs/{run_id}/commands",
        status_code=202,
        response_model=CommandAccepted,
        tags=["api"],
        responses={
            **_ERRORS,
            403: {"model": ErrorBody, "description": "cross-site request"},
            409: {"model": ErrorBody, "description": "run finished"},
            422: {"model": ErrorBody, "description": "invalid command"},
        },
    )
    async def post_command(run_id: RunId, command: Command, request: Request, _: Auth) -> CommandAccepted:
        host = request.client.host if request.client else "unknown"
        agent = request.headers.get("user-agent", "")[:200]
        origin = f"{host} ({agent})" if agent else host
        try:
            cmd = await gw.post_command(run_id, command, origin)
        except RunFinished:
            raise HTTPException(409, f"run {run_id} is finished; it takes no more commands") from None
        return CommandAccepted(id=cmd.id, state=cmd.state)

    @app.get("/api/runs/{run_id}/commands", response_model=list[CommandView], responses=_ERRORS, tags=["api"])
    async def list_commands(run_id: RunId, _: Auth) -> list[CommandView]:
        return [command_view(c) for c in await gw.queries.list_commands(run_id)]

    @app.get("/api/runs/{run_id}/alerts", response_model=list[AlertView], responses=_ERRORS, tags=["api"])
    async def list_alerts(run_id: RunId, _: Auth) -> Response:
        await gw.queries.get_run(run_id)
        return _json(await gw.alerting.list_alerts(run_id))

    @app.get("/api/runs/{run_id}/alert-rules", response_model=dict[str, AlertRuleView], responses=_ERRORS, tags=["api"])
    async def get_alert_rules(run_id: RunId, _: Auth) -> Response:
        await gw.queries.get_run(run_id)
        return _json(await gw.alerting.rules(run_id))

    @app.patch(
        "/api/runs/{run_id}/alert-rules/{kind}",
        response_model=AlertRuleView,
        tags=["api"],
        responses={
            **_ERRORS,
            403: {"model": ErrorBody, "description": "cross-site request"},
            422: {"model": ErrorBody, "description": "unknown parameter or bad value"},
        },
    )
    async def patch_alert_rule(run_id: RunId, kind: str, patch: AlertRulePatch, _: Auth) -> Response:
        await gw.queries.get_run(run_id)
        try:
            view = await gw.alerting.patch_rule(run_id, kind, patch.model_dump(exclude_none=True))
        except UnknownKind:
            raise HTTPException(404, f"no alert kind {kind!r}; the kinds are {', '.join(ALERT_KINDS)}") from None
        except PatchError as e:
            return _json(
                {"detail": f"invalid request: {e}", "errors": [{"loc": ["params"], "msg": str(e), "input": None}]}, 422
            )
        return _json(view)

    @app.post(
        "/api/login-codes",
        response_model=LoginCode,
        status_code=201,
        tags=["api"],
        responses={401: _ERRORS[401], 403: {"model": ErrorBody, "description": "cross-site request"}},
    )
    async def new_login_code(_: Auth) -> LoginCode:
        """A single-use code for ``/login?code=``: what a notebook's frame carries instead of the token."""
        return LoginCode(code=app.state.login_codes.issue(), expires_in=app.state.login_codes.ttl)

    @app.get("/login", status_code=303, tags=["page"], responses={401: {"model": ErrorBody}})
    async def login(
        request: Request,
        token: Annotated[str | None, Query(description="the server token")] = None,
        code: Annotated[str | None, Query(description="a single-use code from POST /api/login-codes")] = None,
    ) -> Response:
        if token is not None:
            if not token_matches(token, app.state.token):
                raise HTTPException(401, "wrong token: use the login URL printed by 'gradwatch serve'")
        elif code is None or not app.state.login_codes.redeem(code):
            raise HTTPException(
                401,
                "missing, used or expired login code: codes work once, within "
                f"{app.state.login_codes.ttl:g} s; ask for a new one, or log in with ?token=",
            )
        response = RedirectResponse("/", status_code=303)  # the browser keeps the URL's #run=ID across it
        response.set_cookie(
            COOKIE_NAME,
            app.state.token,
            max_age=COOKIE_MAX_AGE,
            httponly=True,
            samesite="strict",
            path="/",
            secure=request.url.scheme == "https",
        )
        return response

    app.add_api_websocket_route(TRAINER_PATH, trainer_endpoint)
    app.add_api_websocket_route(BROWSER_PATH, browser_endpoint)
    add_static_routes(app)
    return app
