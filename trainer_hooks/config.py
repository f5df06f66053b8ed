"""What a ``GradientMonitor`` can be told: one validated, side-effect-free dataclass.

``GradientMonitor(**options)`` builds a ``MonitorConfig(**options)``; its keyword
arguments are this class's fields, one to one, with the same defaults (a test
holds them equal). Each ``$GRADWATCH_*`` variable the trainer reads stands in
for one field left ``None`` (``ENV_VARS``). Constructing a config reads the
environment and validates; it opens, writes and starts nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from gradwatch.protocol import ALERT_KINDS, MAX_CLIP_THRESHOLD, check_clip_mode, trainer_ws_url
from gradwatch.tokens import SERVER_ENV, TOKEN_ENV, TOKEN_FILE_ENV, configured_server, resolve_server

from .rewind import RewindOptions
from .snapshots import DEFAULT_EVERY, DEFAULT_KEEP, DEFAULT_MB
from .spool import LOG_DIR_ENV, resolve_log_dir

#: ``GradientMonitor(mode=...)``: stream to the server, or write a run file for ``gradwatch sync``.
MODES = ("online", "offline")
MODE_ENV = "GRADWATCH_MODE"

#: Every environment variable the trainer reads -> the field it stands in for when that field is ``None``.
#: ``$GRADWATCH_TOKEN_FILE`` is where the token is read from when neither ``token`` nor ``$GRADWATCH_TOKEN`` is set.
ENV_VARS: dict[str, str] = {
    SERVER_ENV: "server",
    TOKEN_ENV: "token",
    TOKEN_FILE_ENV: "token",
    MODE_ENV: "mode",
    LOG_DIR_ENV: "log_dir",
}


def validate_clip(mode: str, threshold: float | None) -> None:
    """The clip setting of the constructor and of the page's ``set_clip`` command."""
    check_clip_mode(mode)
    if threshold is not None and not (
        isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0 < threshold <= MAX_CLIP_THRESHOLD
    ):
        raise ValueError(
            f"clip_threshold={threshold!r} must be None (measure only) "
            f"or a finite number in (0, {MAX_CLIP_THRESHOLD:g}]"
        )


def _whole(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} must be a whole number >= {low}")


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class MonitorConfig:
    """Every option of ``GradientMonitor``; the meaning of each is in ``GradientMonitor``'s docstring.

    Fields hold what was given (``pause_on`` as a tuple; ``None``: from the environment, else the
    default); the ``init=False`` fields below them are what that resolved to when the config was made.
    """

    server: str | None = None
    token: str | None = field(default=None, repr=False)  # a secret
    run_name: str | None = None
    every: int = 1
    clip_mode: str = "global_norm"
    clip_threshold: float | None = None
    guard_nonfinite: bool = False
    pause_on: Sequence[str] = ()
    update_ratio_every: int | None = None
    #: A batch of inputs (arrays compare elementwise, and may be large): not part of equality or repr.
    probe_data: Any = field(default=None, repr=False, compare=False)
    probe_every: int = 100
    max_buffer_mb: float = 64.0
    flush_timeout: float = 10.0
    resume: int | str | None = None
    transport_options: Mapping[str, Any] | None = None
    mode: str | None = None
    log_dir: str | os.PathLike[str] | None = None
    spool_mb: float = 1024.0
    rewind_on: Sequence[str] = ()
    rewind_lr_factor: float = 0.5
    max_rewinds: int = 3
    snapshot_every: int = DEFAULT_EVERY
    snapshot_keep: int = DEFAULT_KEEP
    snapshot_mb: float = DEFAULT_MB

    #: ``server``, else ``$GRADWATCH_SERVER``, else the default local server.
    server_url: str = field(init=False)
    #: The default local server was chosen, not named: it must prove it knows the token before it gets it.
    prove_server: bool = field(init=False)
    #: ``mode``, else ``$GRADWATCH_MODE``, else ``"online"``.
    run_mode: str = field(init=False)
    #: ``log_dir``, else ``$GRADWATCH_LOG_DIR``, else ``~/.gradwatch/runs``.
    run_dir: Path = field(init=False)
    #: The snapshot and rewind options above, validated together.
    rewind: RewindOptions = field(init=False, repr=False)

    def __post_init__(self) -> None:
        where = "mode" if self.mode is not None else f"${MODE_ENV}"
        mode = self.mode if self.mode is not None else os.environ.get(MODE_ENV) or "online"
        if mode not in MODES:
            raise ValueError(f"{where}={mode!r} must be one of {MODES} (offline: write a run file for gradwatch sync)")
        if not (_number(self.spool_mb) and self.spool_mb >= 0):
            raise ValueError(f"spool_mb={self.spool_mb!r} must be a number of MiB >= 0 (0: no spool file)")
        if self.log_dir is not None and not isinstance(self.log_dir, (str, os.PathLike)):
            raise ValueError(f"log_dir={self.log_dir!r} must be a folder path (str or pathlib.Path)")
        server_url = resolve_server(self.server)
        trainer_ws_url(server_url)  # validates the URL now, with a clear message
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"every={self.every!r} must be a whole number >= 1 (report every N-th step)")
        validate_clip(self.clip_mode, self.clip_threshold)
        if not (_number(self.max_buffer_mb) and self.max_buffer_mb > 0):
            raise ValueError(f"max_buffer_mb={self.max_buffer_mb!r} must be a positive number of MiB")
        resume = self.resume
        run_id_ok = isinstance(resume, int) and not isinstance(resume, bool) and resume >= 1
        if resume is not None and resume != "auto" and not run_id_ok:
            raise ValueError(f"resume={resume!r} must be None, a run id (a whole number >= 1) or 'auto'")
        if not (_number(self.flush_timeout) and self.flush_timeout >= 0):
            raise ValueError(f"flush_timeout={self.flush_timeout!r} must be a number of seconds >= 0, e.g. 10")
        name = self.run_name
        if name is not None and not (isinstance(name, str) and 0 < len(name) <= 200):
            raise ValueError(f"run_name={name!r} must be a non-empty string of at most 200 characters")
        pause_on = self.pause_on
        unknown = [pause_on] if isinstance(pause_on, str) else [k for k in pause_on if k not in ALERT_KINDS]
        if unknown:
            raise ValueError(f"pause_on={pause_on!r}: {unknown} not alert kinds; choose from {ALERT_KINDS} (a tuple)")
        _whole("probe_every", self.probe_every, 1)
        if self.transport_options is not None and not isinstance(self.transport_options, Mapping):
            raise ValueError(f"transport_options={self.transport_options!r} must be a dict of Transport arguments")
        if self.update_ratio_every is not None:
            _whole("update_ratio_every", self.update_ratio_every, 0)
        rewind = RewindOptions(
            # a bare string is refused there, by name
            cast("tuple[str, ...]", self.rewind_on if isinstance(self.rewind_on, str) else tuple(self.rewind_on)),
            self.rewind_lr_factor,
            self.max_rewinds,
            self.snapshot_every,
            self.snapshot_keep,
            self.snapshot_mb,
        )
        # Normalised and resolved: frozen, so set the way dataclasses' own __init__ does.
        for key, value in {
            "pause_on": tuple(pause_on),
            "rewind_on": rewind.rewind_on,
            "rewind": rewind,
            "guard_nonfinite": bool(self.guard_nonfinite),
            "server_url": server_url,
            "prove_server": not configured_server(self.server),
            "run_mode": mode,
            "run_dir": resolve_log_dir(self.log_dir),
        }.items():
            object.__setattr__(self, key, value)


#: The constructor's fields, in order: ``GradientMonitor``'s keyword arguments.
OPTION_FIELDS = tuple(f for f in MonitorConfig.__dataclass_fields__.values() if f.init)
#: The options whose value in effect is another field: what ``None`` resolved to.
RESOLVED = {"server": "server_url", "mode": "run_mode", "log_dir": "run_dir"}

__all__ = ["ENV_VARS", "MODES", "MODE_ENV", "OPTION_FIELDS", "RESOLVED", "MonitorConfig", "validate_clip"]
