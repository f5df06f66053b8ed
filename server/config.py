"""Server settings: one validated, side-effect-free dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from gradwatch.protocol import MAX_FRAME_BYTES

from .webhooks import SEVERITIES, check_url

LOOPBACK_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")


def default_db_path() -> Path:
    return Path.home() / ".gradwatch" / "gradwatch.db"


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``gradwatch serve`` can be told. Constructing one only validates.

    ``token`` ``None`` means: use ``$GRADWATCH_TOKEN``, else generate one at start
    and write it to ``token_file`` (default ``tokens.default_token_file()``).
    ``allowed_hosts`` ``None`` means localhost, 127.0.0.1, ::1 and ``host``;
    an explicit tuple replaces the loopback names, the bind host stays allowed
    (``"*"`` allows any Host header).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    db_path: Path = field(default_factory=default_db_path)
    token: str | None = None
    token_file: Path | None = None
    allowed_hosts: tuple[str, ...] | None = None
    #: The step writer commits to SQLite at least this often (seconds).
    flush_interval: float = 0.2
    max_frame_bytes: int = MAX_FRAME_BYTES
    #: Messages a browser may have queued before it is closed as too slow.
    viewer_queue_size: int = 1000
    #: ... and bytes (one wide run's step message can be MBs): past either it is closed as too slow.
    viewer_queue_bytes: int = 32 << 20
    #: Buffered (unwritten) step records above which ingest waits for the writer.
    max_buffered_records: int = 10_000
    #: Largest REST request body (commands, labels, rule patches are a few KiB): 413 past it.
    max_request_bytes: int = 1 << 20
    #: ... or buffered bytes (as sent on the wire): the bound that holds for wide models too.
    max_buffered_bytes: int = 64 * 1024 * 1024
    #: Frames and bytes per second one trainer connection is handled at, at most (bursts of one second): a flood
    #: waits its turn so REST and other trainers stay responsive. A trainer sends a few dozen frames a second.
    trainer_frames_per_sec: float = 1000.0
    trainer_bytes_per_sec: float = 64 * 1024 * 1024
    #: Frames uvicorn queues per websocket before it stops reading the socket (at most this x max_frame_bytes).
    ws_max_queue: int = 8
    #: Seconds a new websocket has to send its hello.
    hello_timeout: float = 10.0
    log_level: str = "info"
    #: POST raised, re-opened and resolved alerts here (JSON, Slack-compatible ``text``); ``None``: no webhook.
    webhook_url: str | None = None
    #: The least severe alert posted: ``warning`` (every alert) or ``critical``.
    webhook_min_severity: str = "warning"
    #: Seconds one webhook POST may take before it counts as failed (and is retried).
    webhook_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"host={self.host!r} is empty; use e.g. host='127.0.0.1'")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port!r} is not a TCP port; use an integer 1-65535, or 0 for any free port")
        if not isinstance(self.db_path, Path):
            object.__setattr__(self, "db_path", Path(self.db_path))
        if str(self.db_path) == "":
            raise ValueError("db_path is empty; give a file path such as ~/.gradwatch/gradwatch.db")
        object.__setattr__(self, "db_path", self.db_path.expanduser())
        if self.token_file is not None and not isinstance(self.token_file, Path):
            object.__setattr__(self, "token_file", Path(self.token_file).expanduser())
        if self.token is not None and (len(self.token) < 8 or self.token.strip() != self.token):
            # The value itself is never echoed: it is a secret.
            raise ValueError(
                "token is too short or has surrounding spaces; use at least 8 characters, e.g. from "
                "gradwatch.tokens.generate_token()"
            )
        if self.allowed_hosts is not None:
            hosts = tuple(h.strip().lower() for h in self.allowed_hosts)
            bad = [h for h in hosts if not h or "/" in h or " " in h]
            if not hosts or bad:
                raise ValueError(
                    f"allowed_hosts={self.allowed_hosts!r} must be non-empty host names (no scheme, "
                    "path or spaces), e.g. ('localhost', 'myhost.example'); '*' allows any"
                )
            object.__setattr__(self, "allowed_hosts", hosts)
        if (
            not isinstance(self.flush_interval, (int, float))
            or not (0 < self.flush_interval <= 1.0)
            or not math.isfinite(self.flush_interval)
        ):
            raise ValueError(
                f"flush_interval={self.flush_interval!r} must be in (0, 1] seconds so a crash loses "
                "at most ~1 s of steps; the default is 0.2"
            )
        if not isinstance(self.max_frame_bytes, int) or not 1024 <= self.max_frame_bytes <= 64 * 1024 * 1024:
            raise ValueError(
                f"max_frame_bytes={self.max_frame_bytes!r} must be an integer between 1024 and 64 MiB; "
                f"the protocol default is {MAX_FRAME_BYTES}"
            )
        for name in (
            "viewer_queue_size",
            "viewer_queue_bytes",
            "max_buffered_records",
            "max_buffered_bytes",
            "max_request_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        for name in ("trainer_frames_per_sec", "trainer_bytes_per_sec"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name}={value!r} must be a positive number")
        if (
            isinstance(self.ws_max_queue, bool)
            or not isinstance(self.ws_max_queue, int)
            or not 1 <= self.ws_max_queue <= 1024
        ):
            raise ValueError(f"ws_max_queue={self.ws_max_queue!r} must be an integer in 1..1024")
        if not isinstance(self.hello_timeout, (int, float)) or not 0 < self.hello_timeout <= 300:
            raise ValueError(f"hello_timeout={self.hello_timeout!r} must be in (0, 300] seconds")
        if self.webhook_url is not None:
            check_url(self.webhook_url)
        if self.webhook_min_severity not in SEVERITIES:
            raise ValueError(f"webhook_min_severity={self.webhook_min_severity!r} is not one of {SEVERITIES}")
        if (
            isinstance(self.webhook_timeout, bool)
            or not isinstance(self.webhook_timeout, (int, float))
            or not 0 < self.webhook_timeout <= 120
        ):
            raise ValueError(f"webhook_timeout={self.webhook_timeout!r} must be in (0, 120] seconds; the default is 5")
        levels = ("critical", "error", "warning", "info", "debug")
        if self.log_level not in levels:
            raise ValueError(f"log_level={self.log_level!r} is not one of {levels}")

    @property
    def effective_allowed_hosts(self) -> tuple[str, ...]:
        """The Host names accepted: ``allowed_hosts`` (or the loopback names) plus the bind host itself."""
        base = self.allowed_hosts if self.allowed_hosts is not None else LOOPBACK_HOSTS
        host = self.host.lower()
        return base if host in base else (*base, host)

    @property
    def is_loopback(self) -> bool:
        return is_loopback(self.host)
