"""The dashboard inside a notebook: ``%load_ext gradwatch``, ``%gradwatch`` and ``show()``.

``show()`` finds a gradwatch server — ``$GRADWATCH_SERVER``, else one this kernel
started, else a local ``gradwatch serve`` on the default port — or starts an
embedded one in a background thread of the kernel, then displays the live page
inline in an IFrame. An embedded server publishes its URL and token in this
process's environment (``$GRADWATCH_SERVER``, ``$GRADWATCH_TOKEN``), which is
where a ``GradientMonitor`` created afterwards looks, so it needs no arguments.

The page logs in with an HttpOnly, SameSite=Strict cookie. Inside an IFrame the
browser sends it only when the frame is on the same *site* as the notebook page
(the port does not count), so the frame is pointed at the host name the notebook
itself was opened with (``localhost`` or ``127.0.0.1``). The frame's URL carries a
single-use login code, never the token: a cell's output is saved in the ``.ipynb``.
"""

from __future__ import annotations

import argparse
import atexit
import html
import json
import os
import secrets
import shlex
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradwatch.tokens import (
    DEFAULT_SERVER,
    SERVER_ENV,
    TOKEN_ENV,
    generate_token,
    proves_token,
    resolve_server,
    resolve_token,
)


def default_db() -> Path:
    """The embedded server's SQLite file unless ``db=`` says otherwise: runs outlive the kernel."""
    return Path.home() / ".gradwatch" / "notebook.db"


@dataclass(frozen=True)
class Dashboard:
    """A reachable gradwatch server, as the notebook uses it."""

    url: str
    #: Kept in the kernel to ask for login codes; never written into an output.
    token: str | None = field(repr=False)
    embedded: bool

    def login_code(self) -> str | None:
        """A single-use login code (``POST /api/login-codes``), or None without a (valid) token."""
        if not self.token:
            return None
        request = urllib.request.Request(
            f"{self.url}/api/login-codes", method="POST", headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return str(json.load(response)["code"])
        except (OSError, ValueError, KeyError):
            return None

    def page_url(self, run: int | None = None, code: str | None = None) -> str:
        fragment = f"#run={run}" if run is not None else ""
        if code is not None:
            return f"{self.url}/login?code={code}{fragment}"  # /login redirects to / keeping the fragment
        return f"{self.url}/{fragment}"


_lock = threading.Lock()
_embedded: Any = None  # the GradwatchServer this process started, if any


def ensure_server(port: int = 0, db: str | os.PathLike[str] | None = None) -> Dashboard:
    """The server the notebook's page and monitors use, started embedded if none is reachable.

    ``port`` and ``db`` apply only when a server is started here (``port`` 0: any free port).
    """
    global _embedded
    with _lock:
        if _embedded is not None:
            return Dashboard(_embedded.url, _embedded.token, embedded=True)
        configured = os.environ.get(SERVER_ENV)
        if configured:
            return Dashboard(resolve_server(configured), resolve_token(), embedded=False)  # never start another
        # Whatever answers on the default port gets the token only once it proved it knows it.
        if (token := resolve_token()) is not None and proves_token(DEFAULT_SERVER, token, timeout=0.5):
            return Dashboard(DEFAULT_SERVER, token, embedded=False)
        from gradwatch.server.config import ServerConfig
        from gradwatch.server.serve import GradwatchServer

        path = Path(db).expanduser() if db is not None else default_db()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A token of its own, in memory only: a real `gradwatch serve`'s token file stays untouched.
        config = ServerConfig(port=port, db_path=path, token=generate_token(), log_level="warning")
        server = GradwatchServer(config, out=_Quiet()).start()
        atexit.register(server.stop)
        os.environ[SERVER_ENV], os.environ[TOKEN_ENV] = server.url, server.token or ""
        _embedded = server
        return Dashboard(server.url, server.token, embedded=True)


def stop() -> None:
    """Stop the embedded server, if this process started one (the kernel's exit does it too)."""
    global _embedded
    with _lock:
        server, _embedded = _embedded, None
    if server is not None:
        server.stop()
        for name in (SERVER_ENV, TOKEN_ENV):
            os.environ.pop(name, None)


class _Quiet:
    """Swallows the server's start-up lines (they carry the token); ``show`` says what matters."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


#: Host names that reach this machine's loopback; the frame takes the notebook's own one of them.
_LOOPBACK = ("localhost", "127.0.0.1", "[::1]")
#: Points the frame (and its link) at the notebook page's own loopback host name.
_FOLLOW_HOST = (
    "(function(){var h=window.location.hostname;var loop=LOOPBACK.indexOf(h)>=0;"
    "[[FRAME,'src'],[LINK,'href']].forEach(function(p){var e=document.getElementById(p[0]);if(!e)return;"
    "var u=new URL(e.getAttribute('data-'+p[1]));if(loop){u.hostname=h;}e[p[1]]=u.toString();});})();"
)


def iframe_html(dashboard: Dashboard, run: int | None = None, height: int = 600) -> str:
    """The HTML ``show`` displays: the frame, a link to open the page in a tab, and who serves it.

    The frame logs in with a single-use code, spent by its first load: the output (saved in
    the ``.ipynb``) never holds the token. Without a token the page asks to log in.
    """
    frame_id = f"gradwatch-{secrets.token_hex(4)}"
    src = dashboard.page_url(run, dashboard.login_code())
    where = "embedded in this kernel" if dashboard.embedded else "already running"
    link = dashboard.page_url(run)  # the code is spent by the frame: the tab logs in with the cookie
    # Same site as the notebook page, or the browser withholds the login cookie inside the frame.
    # The script sets the URLs: a frame loaded first from the other name would spend the code.
    script = (
        _FOLLOW_HOST.replace("FRAME", json.dumps(frame_id))
        .replace("LINK", json.dumps(frame_id + "-link"))
        .replace("LOOPBACK", json.dumps(list(_LOOPBACK)))
    )
    return (
        f'<div class="gradwatch-notebook">'
        f'<iframe id="{frame_id}" data-src="{html.escape(src)}" width="100%" height="{int(height)}" '
        f'style="border:1px solid #ccc;border-radius:4px" title="gradwatch dashboard"></iframe>'
        f'<div style="font-size:12px;color:#666">gradwatch at {html.escape(dashboard.url)} ({where}) · '
        f'<a id="{frame_id}-link" data-href="{html.escape(link)}" target="_blank" rel="noopener">open in a new tab</a>'
        f"</div><script>{script}</script></div>"
    )


def show(run: int | None = None, height: int = 600, *, port: int = 0, db: str | os.PathLike[str] | None = None) -> None:
    """Display the live dashboard inline (the newest run unless ``run`` names one).

    Outside IPython (a plain interpreter, a script) it prints the page's URL instead.
    """
    if run is not None and (isinstance(run, bool) or not isinstance(run, int) or run < 1):
        raise ValueError(f"run={run!r} must be a run id (a positive integer, as in the page's #run=ID) or None")
    if isinstance(height, bool) or not isinstance(height, int) or not 100 <= height <= 5000:
        raise ValueError(f"height={height!r} must be a whole number of pixels between 100 and 5000")
    dashboard = ensure_server(port, db)
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:  # a plain interpreter: nothing would render HTML
        print(f"gradwatch dashboard: {dashboard.page_url(run, dashboard.login_code())}", flush=True)
        return
    display(HTML(iframe_html(dashboard, run, height)))  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------------- IPython magic


def _magic_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="%gradwatch", description="Show the live gradwatch dashboard inline.", exit_on_error=False
    )
    p.add_argument("--run", type=int, default=None, help="run id to show (default: the newest run)")
    p.add_argument("--height", type=int, default=600, help="frame height in pixels (default 600)")
    p.add_argument("--port", type=int, default=0, help="port of an embedded server, if one is started (0: any)")
    p.add_argument("--db", default=None, help="SQLite file of an embedded server (default ~/.gradwatch/notebook.db)")
    p.add_argument("--stop", action="store_true", help="stop the embedded server instead")
    return p


def magic(line: str) -> None:
    """``%gradwatch [--run ID] [--height PX] [--port N] [--db PATH] [--stop]``."""
    parser = _magic_parser()
    try:
        args = parser.parse_args(shlex.split(line))
    except (argparse.ArgumentError, SystemExit) as err:
        # IPython shows this one line; argparse's own exit would look like a crash of the cell.
        raise ValueError(f"%gradwatch {line!r}: {err}; usage: {parser.format_usage().strip()}") from None
    if args.stop:
        stop()
        return
    show(args.run, args.height, port=args.port, db=args.db)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext gradwatch``: registers the ``%gradwatch`` line magic."""
    ipython.register_magic_function(magic, magic_kind="line", magic_name="gradwatch")
