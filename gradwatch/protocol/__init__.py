"""The gradwatch wire protocol: the one contract between trainer, server and page.

Every websocket frame is one JSON text message with a ``type`` field. The
trainer and the page each open with a handshake that carries
``PROTOCOL_VERSION``; a peer speaking another version is refused with
``CloseCode.PROTOCOL_MISMATCH``. See docs/protocol.md for the narrative.

Every float on the wire may also be one of the strings ``"NaN"``,
``"Infinity"``, ``"-Infinity"`` (wirejson.py; re-exported here, so that peers
import the whole contract from this package).

One module per concept, every public name re-exported here (import from ``gradwatch.protocol``):
``common`` (version, paths, frame limit, close codes), ``vocabulary`` (clip modes, statuses, commands,
severities, alert kinds and states), ``commands`` (``Command`` and its parameters), ``run_files``,
``trainer`` (the trainer's link, both ways), ``views`` (what the page and REST show), ``page`` (the page's link).

This package depends on pydantic and the standard library only, so both the
training process and the server can import it cheaply.
"""

from __future__ import annotations

from ..stepfields import BN_FIELDS as BN_FIELDS
from ..wirejson import MAX_ELEMENT_COUNT as MAX_ELEMENT_COUNT
from ..wirejson import MAX_INT as MAX_INT
from ..wirejson import MAX_STEP as MAX_STEP
from ..wirejson import FiniteFloat as FiniteFloat
from ..wirejson import NonFinite as NonFinite
from ..wirejson import ServerFloat as ServerFloat
from ..wirejson import WireCount as WireCount
from ..wirejson import WireElementCount as WireElementCount
from ..wirejson import WireFloat as WireFloat
from ..wirejson import WireId as WireId
from ..wirejson import WireStep as WireStep
from ..wirejson import decode_float as decode_float
from ..wirejson import dumps as dumps
from ..wirejson import encode_float as encode_float
from .commands import COMMAND_PARAMS as COMMAND_PARAMS
from .commands import MAX_CLIP_THRESHOLD as MAX_CLIP_THRESHOLD
from .commands import MAX_LEARNING_RATE as MAX_LEARNING_RATE
from .commands import ClipSetting as ClipSetting
from .commands import Command as Command
from .commands import CommandParams as CommandParams
from .common import BROWSER_PATH as BROWSER_PATH
from .common import MAX_FRAME_BYTES as MAX_FRAME_BYTES
from .common import PROTOCOL_VERSION as PROTOCOL_VERSION
from .common import TRAINER_PATH as TRAINER_PATH
from .common import CloseCode as CloseCode
from .common import trainer_ws_url as trainer_ws_url
from .common import version_mismatch_reason as version_mismatch_reason
from .page import MAX_COMPARE as MAX_COMPARE
from .page import AlertMessage as AlertMessage
from .page import AlertRulesMessage as AlertRulesMessage
from .page import BrowserHello as BrowserHello
from .page import BrowserMessage as BrowserMessage
from .page import CommandUpdate as CommandUpdate
from .page import Compare as Compare
from .page import GapMessage as GapMessage
from .page import PageMessage as PageMessage
from .page import ProbeMessage as ProbeMessage
from .page import RunMessage as RunMessage
from .page import RunsMessage as RunsMessage
from .page import ServerHello as ServerHello
from .page import StepsMessage as StepsMessage
from .page import Subscribe as Subscribe
from .page import page_message_text as page_message_text
from .page import parse_browser_message as parse_browser_message
from .page import parse_page_message as parse_page_message
from .run_files import RUN_FILE_FORMAT as RUN_FILE_FORMAT
from .run_files import RUN_FILE_PROTOCOLS as RUN_FILE_PROTOCOLS
from .run_files import RUN_FILE_SUFFIX as RUN_FILE_SUFFIX
from .run_files import RunFileHeader as RunFileHeader
from .run_files import RunUid as RunUid
from .trainer import Ack as Ack
from .trainer import AnyTrainerMessage as AnyTrainerMessage
from .trainer import CommandMessage as CommandMessage
from .trainer import Gap as Gap
from .trainer import Mark as Mark
from .trainer import Marked as Marked
from .trainer import NonfiniteOrigin as NonfiniteOrigin
from .trainer import Probe as Probe
from .trainer import ServerToTrainer as ServerToTrainer
from .trainer import Snapshots as Snapshots
from .trainer import Status as Status
from .trainer import StepRecord as StepRecord
from .trainer import Steps as Steps
from .trainer import TrainerHello as TrainerHello
from .trainer import TrainerMessage as TrainerMessage
from .trainer import VariableSet as VariableSet
from .trainer import Welcome as Welcome

# The trainer messages' validator, for the protocol fuzz test (tests/reliability/test_fuzz_protocol.py).
from .trainer import _trainer_message as _trainer_message
from .trainer import parse_server_message as parse_server_message
from .trainer import parse_trainer_hello as parse_trainer_hello
from .trainer import parse_trainer_message as parse_trainer_message
from .views import AlertCounts as AlertCounts
from .views import AlertRuleView as AlertRuleView
from .views import AlertUpdate as AlertUpdate
from .views import AlertView as AlertView
from .views import ClipView as ClipView
from .views import CommandView as CommandView
from .views import GapView as GapView
from .views import ProbeView as ProbeView
from .views import RunState as RunState
from .views import RunSummary as RunSummary
from .views import VariableSetView as VariableSetView
from .vocabulary import ACTION_SEVERITIES as ACTION_SEVERITIES
from .vocabulary import ALERT_KINDS as ALERT_KINDS
from .vocabulary import ALERT_LABELS as ALERT_LABELS
from .vocabulary import ALERT_STATES as ALERT_STATES
from .vocabulary import CLIP_MODES as CLIP_MODES
from .vocabulary import COMMANDS as COMMANDS
from .vocabulary import RUN_STATUSES as RUN_STATUSES
from .vocabulary import SEVERITIES as SEVERITIES
from .vocabulary import TRAINER_STATES as TRAINER_STATES
from .vocabulary import AlertKind as AlertKind
from .vocabulary import AlertState as AlertState
from .vocabulary import ClipMode as ClipMode
from .vocabulary import CommandState as CommandState
from .vocabulary import CommandType as CommandType
from .vocabulary import RunStatus as RunStatus
from .vocabulary import Severity as Severity
from .vocabulary import TrainerState as TrainerState
from .vocabulary import check_clip_mode as check_clip_mode
