"""The page: ``/`` and ``/static/...`` from ``client/``; ``/static/plotly.min.js`` from the plotly package.

The page files hold no data, so they are served without the token; the data
routes and websockets they call all need it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from gradwatch.client import CLIENT_DIR

SERVED_SUFFIXES = frozenset({".html", ".js", ".css", ".svg", ".png", ".ico", ".json", ".map", ".woff2"})


def plotly_js() -> Path | None:
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def client_file(name: str, root: Path = CLIENT_DIR) -> Path | None:
    """``root/name`` if it is a servable file inside ``root`` (no traversal, no hidden or Python files)."""
    if not name or "\x00" in name or any(part.startswith((".", "_")) for part in Path(name).parts):
        return None
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()) or path.suffix not in SERVED_SUFFIXES or not path.is_file():
        return None
    return path


def add_static_routes(app: FastAPI) -> None:
    no_cache = {"Cache-Control": "no-cache"}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        path = client_file("index.html")
        if path is None:
            raise HTTPException(404, "the page is not installed (client/index.html is missing)")
        return FileResponse(path, headers=no_cache)

    @app.get("/static/plotly.min.js", include_in_schema=False)
    async def plotly() -> FileResponse:
        path = plotly_js()
        if path is None:
            raise HTTPException(404, "plotly is not installed: pip install 'gradwatch[server]'")
        return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    @app.get("/static/{name:path}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        path = client_file(name)
        if path is None:
            raise HTTPException(404, f"no such page file: {name}")
        return FileResponse(path, headers=no_cache)
