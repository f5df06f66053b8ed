"""Where the server and its access token are found, shared by `gradwatch serve` and local trainers.

`serve` writes a generated token to a user-only file; a trainer on the same
machine reads it, so the common local case needs no configuration at all.
``$GRADWATCH_SERVER`` (set by hand, or by a notebook's embedded server) names
the server when it is not the default local one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

TOKEN_ENV = "GRADWATCH_TOKEN"
TOKEN_FILE_ENV = "GRADWATCH_TOKEN_FILE"
SERVER_ENV = "GRADWATCH_SERVER"
#: The server a trainer talks to when neither ``server=`` nor ``$GRADWATCH_SERVER`` says otherwise.
DEFAULT_SERVER = "http://127.0.0.1:8765"


def resolve_server(explicit: str | None = None) -> str:
    """The server URL to use: ``explicit``, else ``$GRADWATCH_SERVER``, else ``DEFAULT_SERVER``."""
    return (explicit or os.environ.get(SERVER_ENV) or DEFAULT_SERVER).rstrip("/")


def default_token_file() -> Path:
    """``$GRADWATCH_TOKEN_FILE`` if set, else ``~/.gradwatch/token``."""
    override = os.environ.get(TOKEN_FILE_ENV)
    return Path(override) if override else Path.home() / ".gradwatch" / "token"


def generate_token() -> str:
    return secrets.token_urlsafe(32)


def write_token_file(token: str, path: Path | None = None) -> Path:
    """Write ``token`` readable by the current user only (0600 in a 0700 folder)."""
    path = path or default_token_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to an existing file
    return path


def resolve_token(explicit: str | None = None, path: Path | None = None) -> str | None:
    """The token to use: ``explicit``, else ``$GRADWATCH_TOKEN``, else the token file, else None."""
    if explicit:
        return explicit
    env = os.environ.get(TOKEN_ENV)
    if env:
        return env
    path = path or default_token_file()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def configured_server(explicit: str | None = None) -> bool:
    """Was the server named (``explicit`` or ``$GRADWATCH_SERVER``)? Else it is the default local one,
    which gets the token only after it proved it knows it (``proves_token``): any local process
    could be the one answering on 127.0.0.1:8765."""
    return bool(explicit or os.environ.get(SERVER_ENV))


def token_proof(token: str, nonce: str, port: int) -> str:
    """What a server that knows ``token`` answers to ``GET /api/health?proof=<nonce>`` on ``port``.

    The port is the one the server's socket accepted the request on: a squatter relaying the
    challenge to the real server elsewhere gets a proof for the wrong port.
    """
    return hmac.new(token.encode(), f"gradwatch-proof:{nonce}:{port}".encode(), hashlib.sha256).hexdigest()


def proves_token(server: str, token: str, timeout: float = 2.0) -> bool:
    """Does the server at ``server`` (http(s) or ws(s) URL) know ``token``? Asked without sending it."""
    parts = urlsplit(server)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    port = parts.port or (443 if scheme == "https" else 80)
    nonce = secrets.token_hex(16)
    try:
        with urllib.request.urlopen(f"{scheme}://{parts.netloc}/api/health?proof={nonce}", timeout=timeout) as r:
            answer = json.loads(r.read(4096)).get("proof")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(answer, str) and hmac.compare_digest(answer, token_proof(token, nonce, port))


def untrusted(server: str) -> str:
    """Why the token was not sent to ``server`` (the default one, unproven), and what to do."""
    return (
        f"the server at {server} did not prove it knows the token, so the token was not sent (another program "
        "may be answering there); start 'gradwatch serve', or name the server to trust with --server / "
        f"${SERVER_ENV}"
    )
