"""``gradwatch export``: stream ``GET /api/runs/{id}/export`` into a file (standard library only)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from .tokens import TOKEN_ENV, configured_server, proves_token, resolve_server, resolve_token, untrusted

#: The export formats ``GET /api/runs/{id}/export`` serves (``server/export.py`` takes them from here).
FORMATS: tuple[str, ...] = ("parquet", "csv")


class ExportError(RuntimeError):
    """A download that cannot be done; ``str(e)`` says why and what to do."""


def _detail(e: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(e.read().decode("utf-8", "replace")).get("detail", e.reason))
    except (ValueError, AttributeError):
        return str(e.reason)


def export_url(server: str, run_id: int, fmt: str) -> str:
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ExportError(f"server={server!r} is not an http(s) URL; use e.g. http://127.0.0.1:8765")
    if fmt not in FORMATS:
        raise ExportError(f"format={fmt!r} is not one of {', '.join(FORMATS)}")
    return f"{server.rstrip('/')}/api/runs/{int(run_id)}/export?format={fmt}"


def download(
    server: str | None,
    run_id: int,
    fmt: str,
    output: Path | None,
    token_file: Path | None = None,
    timeout: float = 30.0,
) -> Path | None:
    """Write the export to ``output`` (``-``: stdout; ``None``: ``run-<id>.<format>`` here); returns the path.

    ``server`` ``None``: ``$GRADWATCH_SERVER``, else the default local server, which must first prove it
    knows the token. The file appears only when the download completed (written beside it, then renamed).
    """
    configured, server = configured_server(server), resolve_server(server)
    url = export_url(server, run_id, fmt)
    token = resolve_token(None, token_file)
    if token is None:
        raise ExportError(f"no token: set ${TOKEN_ENV} or pass --token-file (the file 'gradwatch serve' wrote)")
    if not configured and not proves_token(server, token):
        raise ExportError(untrusted(server))
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise ExportError(f"{url}: HTTP {e.code}: {_detail(e)}") from None
    except OSError as e:
        raise ExportError(f"cannot reach {server}: {e}; is 'gradwatch serve' running there?") from None
    with response:
        if output is not None and str(output) == "-":
            shutil.copyfileobj(response, sys.stdout.buffer, 1 << 20)
            return None
        if output is None:  # named here, never by the server's Content-Disposition (a path, a dotfile)
            output = Path(f"run-{int(run_id)}.{fmt}")
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
            os.replace(tmp, output)
        except (OSError, http.client.HTTPException) as e:
            Path(tmp).unlink(missing_ok=True)
            raise ExportError(f"the download from {url} broke off ({e!r}); nothing was written to {output}") from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return output
