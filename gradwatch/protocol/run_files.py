"""Run files (docs/protocol.md, "Run files"): a trainer session on disk, offline or spooled, for ``gradwatch sync``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt

from ..wirejson import FiniteFloat
from .common import PROTOCOL_VERSION, _Msg

#: Protocol versions whose run files (``gradwatch sync``) this one replays: version 3 only added to version 2
#: (messages ``variables`` and ``mark``, optional fields), so a version-2 file's lines are version-3 lines.
RUN_FILE_PROTOCOLS: tuple[int, ...] = (2, PROTOCOL_VERSION)

#: A trainer session's unique id: a uuid4 in hex.
RunUid = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
#: Version of the run file layout (docs/protocol.md, "Run files").
RUN_FILE_FORMAT = 1
#: How run files end; ``gradwatch sync`` looks for these in a folder.
RUN_FILE_SUFFIX = ".gwrun.jsonl"


class RunFileHeader(_Msg):
    """The first line of a run file: an offline run, or reports spooled while the server was away.

    The file goes on with the session's ``hello`` and then the trainer's messages exactly as
    the websocket would carry them (``parse_trainer_message``), one JSON object per line.
    """

    type: Literal["gradwatch_run"] = "gradwatch_run"
    format: StrictInt = RUN_FILE_FORMAT
    uid: RunUid
    #: ``offline``: the whole run; ``spool``: only the reports the server did not get in time.
    source: Literal["offline", "spool"]
    created_at: FiniteFloat
