"""The gradwatch wire protocol: the one contract between trainer, server and page.

Every websocket frame is one JSON text message with a ``type`` field. The
trainer and the page each open with a handshake that carries
``PROTOCOL_VERSION``; a peer speaking another version is refused with
``CloseCode.PROTOCOL_MISMATCH``. See docs/protocol.md for the narrative.

Every float on the wire may also be one of the strings ``"NaN"``,
``"Infinity"``, ``"-Infinity"`` (wirejson.py; re-exported here, so that peers
import the whole contract from this module).

This module depends on pydantic and the standard library only, so both the
training process and the server can import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, TypeAdapter, model_validator

from .stepfields import BN_FIELDS as BN_FIELDS
from .stepfields import check_model_fields as _check_step_fields
from .wirejson import MAX_ELEMENT_COUNT as MAX_ELEMENT_COUNT
from .wirejson import MAX_INT as MAX_INT
from .wirejson import MAX_STEP as MAX_STEP
from .wirejson import FiniteFloat as FiniteFloat
from .wirejson import NonFinite as NonFinite
from .wirejson import ServerFloat as ServerFloat
from .wirejson import WireCount as WireCount
from .wirejson import WireElementCount as WireElementCount
from .wirejson import WireFloat as WireFloat
from .wirejson import WireId as WireId
from .wirejson import WireStep as WireStep
from .wirejson import decode_float as decode_float
from .wirejson import dumps as dumps
from .wirejson import encode_float as encode_float

PROTOCOL_VERSION = 3

#: Protocol versions whose run files (``gradwatch sync``) this one replays: version 3 only added to version 2
#: (messages ``variables`` and ``mark``, optional fields), so a version-2 file's lines are version-3 lines.
RUN_FILE_PROTOCOLS: tuple[int, ...] = (2, PROTOCOL_VERSION)

#: Largest websocket frame either side accepts. A step record of 2,000
#: variables is about 60 KB; a batch of records stays well under this.
MAX_FRAME_BYTES = 4 * 1024 * 1024

#: Upper bound on a clip threshold; anything larger is a typo, not a setting.
MAX_CLIP_THRESHOLD = 1e9

TRAINER_PATH = "/ws/trainer"
BROWSER_PATH = "/ws/browser"


def trainer_ws_url(server: str) -> str:
    """``http://host:port`` (or ws://, https://, wss://) → the trainer websocket URL."""
    parts = urlsplit(server)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"server={server!r} is not a URL like 'http://127.0.0.1:8765'")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + TRAINER_PATH, "", ""))


class CloseCode(IntEnum):
    """Websocket close codes used by gradwatch (4000-4999 is the private range)."""

    UNAUTHORIZED = 4401
    FORBIDDEN_ORIGIN = 4403
    PROTOCOL_MISMATCH = 4426
    BAD_MESSAGE = 4400
    TOO_SLOW = 4408  # a viewer fell too far behind; it should reconnect and backfill
    #: The server cannot write its database (disk full, I/O error): nothing it acknowledged is lost; the trainer
    #: keeps what it has not sent and reconnects (refused again until the store writes again).
    STORAGE_UNAVAILABLE = 4507
    # The standard codes gradwatch sends (RFC 6455, 7.4.1):
    SERVER_SHUTDOWN = 1001
    #: The request broke a server policy: a Host header not allowed (DNS rebinding guard, ``server/auth.py``).
    POLICY_VIOLATION = 1008
    #: The server failed unexpectedly; the trainer reconnects and resends what was not acknowledged.
    INTERNAL_ERROR = 1011
    #: Not now: a run file's sync while that run's trainer is connected (``server/service.py``).
    TRY_AGAIN_LATER = 1013


# --------------------------------------------------------------------------- shared pieces

#: How the trainer clips (``ClipSetting.mode``): ``global_norm`` (Keras' ``global_clipnorm``), ``norm`` (per variable,
#: ``clipnorm``), ``value`` (per element, ``clipvalue``).
ClipMode = Literal["global_norm", "norm", "value"]
CLIP_MODES: tuple[str, ...] = get_args(ClipMode)


def check_clip_mode(mode: object, name: str = "clip_mode") -> str:
    """``mode`` if it is a ``ClipMode``; else a ValueError naming ``name``'s bad value and the choices."""
    if not isinstance(mode, str) or mode not in CLIP_MODES:
        raise ValueError(f"{name}={mode!r} is not one of {CLIP_MODES}")
    return mode


#: What the trainer says its run is doing (``Status.state``): ``idle`` between two ``fit()`` calls
#: (or ``watch()`` blocks) of one monitor, ``interrupted`` after one ended by an exception
#: (KeyboardInterrupt, another callback's error). Both continue as ``running`` with the next fit.
TrainerState = Literal["running", "paused", "idle", "interrupted", "finished"]
TRAINER_STATES: tuple[str, ...] = get_args(TrainerState)
#: A run's status on the server: the trainer's state, or ``disconnected`` when its trainer went away.
RunStatus = Literal[TrainerState, "disconnected"]
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
#: The control commands (``Command.type``). A new command is declared here, in ``CommandType`` and
#: ``COMMAND_PARAMS`` below (its parameters); the trainer says in which of its states it applies and what it does
#: (``trainer_hooks/control.py``, checked against ``COMMANDS`` at import); the page reads the list from the
#: generated ``client/protocol.js``.
CommandType = Literal["pause", "resume", "stop", "set_clip", "set_lr", "rewind"]
COMMANDS: tuple[str, ...] = get_args(CommandType)
#: An alert's severity, lowest first (the order ranks them): ``info`` is worth knowing and needs no action
#: (an overflow the loss scaler handled) and never pauses a run.
Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
#: The severities that call for action: what ``pause_on`` acts on and a webhook may be set to post from.
ACTION_SEVERITIES: tuple[str, ...] = SEVERITIES[1:]
#: The alert kinds, in the order the server evaluates them (exploding before nonfinite: growth that ends in NaN is
#: raised as what it is first). The server declares each kind's rule, severity, parameters and texts beside its
#: rule (``server/alerts/kinds.py`` checks that they cover exactly these).
AlertKind = Literal[
    "exploding_gradients",
    "vanishing_gradients",
    "nonfinite",
    "dead_relu",
    "frozen_batchnorm",
    "clip_saturated",
    "diverging",
]
ALERT_KINDS: tuple[str, ...] = get_args(AlertKind)
#: What the page calls each kind.
ALERT_LABELS: dict[str, str] = {
    "exploding_gradients": "Exploding gradients",
    "vanishing_gradients": "Vanishing gradients",
    "nonfinite": "NaN / Inf gradients",
    "dead_relu": "Dead ReLU units",
    "frozen_batchnorm": "Frozen BatchNorm",
    "clip_saturated": "Clipping saturated",
    "diverging": "Heading for divergence",
}
if tuple(ALERT_LABELS) != ALERT_KINDS:
    raise TypeError(f"ALERT_LABELS {tuple(ALERT_LABELS)} differ from AlertKind {ALERT_KINDS}")

#: An alert's lifecycle (``AlertView.state``, docs/alerts.md "Lifecycle"): ``open`` while its condition holds or
#: has been clear for fewer steps than its kind's clear steps, then ``resolved``. A condition that returns after
#: that opens a new alert of the same kind and layer: its next episode (``count`` + 1).
AlertState = Literal["open", "resolved"]
ALERT_STATES: tuple[str, ...] = get_args(AlertState)

#: Upper bound on a learning rate set from the page.
MAX_LEARNING_RATE = 1e3
CommandState = Literal["pending", "applied", "rejected"]


@dataclass(frozen=True)
class CommandParams:
    """The ``Command`` parameters a command type needs and those it may also take (it takes no others)."""

    needs: tuple[str, ...] = ()
    takes: tuple[str, ...] = ()
    #: What a needed parameter is, with an example command (the error message's fix).
    hint: str = ""


#: Every command type's parameters, in ``CommandType``'s order.
COMMAND_PARAMS: dict[str, CommandParams] = {
    "pause": CommandParams(),
    "resume": CommandParams(),
    "stop": CommandParams(),
    "set_clip": CommandParams(
        ("threshold",), ("mode", "group"), "a finite number > 0, e.g. {'type': 'set_clip', 'threshold': 1.0}"
    ),
    "set_lr": CommandParams(("lr",), ("group",), "a finite number > 0, e.g. {'type': 'set_lr', 'lr': 0.001}"),
    # every optimizer of the run is restored: no group
    "rewind": CommandParams(
        ("step",),
        ("lr", "threshold", "mode", "auto"),
        "a snapshot step the run holds (run.snapshots), e.g. {'type': 'rewind', 'step': 200}",
    ),
}
if tuple(COMMAND_PARAMS) != COMMANDS:
    raise TypeError(f"COMMAND_PARAMS {tuple(COMMAND_PARAMS)} differ from CommandType {COMMANDS}")


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClipSetting(_Msg):
    mode: ClipMode = "global_norm"
    #: ``None`` means "measure, clip nothing".
    threshold: Annotated[StrictFloat, Field(gt=0, le=MAX_CLIP_THRESHOLD, allow_inf_nan=False)] | None = None


class Command(_Msg):
    """A control command, as posted by the page and forwarded to the trainer.

    ``set_clip`` needs a finite positive ``threshold``; ``mode`` defaults to the
    run's current mode. ``set_lr`` needs a finite positive ``lr``. Either may name
    an optimizer ``group`` (a run with several, ``meta.optimizer_groups``): only that
    optimizer changes; without it every group does. The other types take no parameters.
    """

    type: CommandType
    mode: ClipMode | None = None
    threshold: Annotated[StrictFloat | StrictInt, Field(gt=0, le=MAX_CLIP_THRESHOLD, allow_inf_nan=False)] | None = None
    lr: Annotated[StrictFloat | StrictInt, Field(gt=0, le=MAX_LEARNING_RATE, allow_inf_nan=False)] | None = None
    group: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    #: ``rewind``: restore the newest snapshot the trainer holds taken at or before this step
    #: (``RunState.snapshots`` lists them).
    step: WireStep | None = None
    #: ``rewind`` only: ``True`` when posted by the server for ``rewind_on`` (the trainer scales its learning rate
    #: by its ``rewind_lr_factor`` unless ``lr`` is given, and counts it against ``max_rewinds``); absent otherwise.
    auto: StrictBool | None = None

    @model_validator(mode="after")
    def _parameters_match_type(self) -> Command:
        spec = COMMAND_PARAMS[self.type]
        for name in spec.needs:
            if getattr(self, name) is None:
                raise ValueError(f"{self.type} needs {name!r}: {spec.hint}")
        given = [n for n in _COMMAND_PARAMETERS if getattr(self, n) is not None]
        extra = [n for n in given if n not in (*spec.needs, *spec.takes)]
        if extra and not (spec.needs or spec.takes):
            takers = [t for t, p in COMMAND_PARAMS.items() if p.needs or p.takes]
            raise ValueError(f"{self.type!r} takes no parameters; only {' and '.join(takers)} do")
        if extra:
            owners = [t for t, p in COMMAND_PARAMS.items() if set(extra) & {*p.needs, *p.takes}]
            raise ValueError(
                f"{self.type} takes no {' or '.join(map(repr, extra))}; send a separate {' or '.join(owners)} command"
            )
        return self


#: ``Command``'s fields other than ``type``: what ``COMMAND_PARAMS`` entries may name.
_COMMAND_PARAMETERS: tuple[str, ...] = tuple(n for n in Command.model_fields if n != "type")
_unknown = {t: c for t, c in COMMAND_PARAMS.items() if not set(c.needs + c.takes) <= set(_COMMAND_PARAMETERS)}
if _unknown:
    raise TypeError(f"COMMAND_PARAMS name parameters Command does not have: {_unknown}")


# --------------------------------------------------------------------------- trainer -> server


def _accepts_none(annotation: object) -> bool:
    return type(None) in get_args(annotation)


class StepRecord(_Msg):
    """Statistics of one optimizer step, reported by the trainer.

    The fields are declared in ``gradwatch/stepfields.py`` (``STEP_FIELDS``: kind, writer,
    storage); this model is their typed wire form and is checked against that table below.
    Vectors are in the order of ``TrainerHello.variables`` (``grad_*``) and
    ``TrainerHello.bn_layers`` (``bn``). ``bn`` rows are ``BN_FIELDS``.
    """

    step: WireStep
    epoch: WireCount
    time: FiniteFloat  # unix seconds at the end of the step
    loss: WireFloat | None = None
    lr: WireFloat | None = None
    global_norm: WireFloat
    clip_mode: ClipMode
    clip_threshold: WireFloat | None = None
    clip_scale: WireFloat  # post-clip global norm / pre-clip global norm (1.0 when not clipped)
    clipped: StrictBool
    clipped_fraction: WireFloat | None = None  # share of elements clipped; value mode only
    steps_per_sec: WireFloat | None = None
    grad_norm: list[WireFloat]
    grad_nan: list[WireElementCount]
    grad_inf: list[WireElementCount]
    weight_nonfinite: WireCount = 0
    loss_nonfinite: StrictBool = False
    #: BatchNorm moving statistics, on the steps where the trainer sampled them (empty on the others).
    bn: list[list[WireFloat]] = Field(default_factory=list)
    #: Per variable ||w_after - w_before|| / ||w_before|| for this step, when measured.
    update_ratio: list[WireFloat] | None = None
    #: The step's update was skipped because its gradients were not finite (``guard_nonfinite``).
    skipped: StrictBool = False
    #: ``loss`` is Keras' running mean of the epoch so far (``logs["loss"]``), not the step's own: the
    #: train step exposed no loss of its own (a custom ``train_step`` tracking it with ``keras.metrics.Mean``).
    loss_is_mean: StrictBool = False
    #: Gradient accumulation (``gradient_accumulation_steps``): a step whose gradient was only accumulated.
    micro_step: StrictBool = False
    #: Gradient accumulation, update step: global norm of the averaged gradient Keras clips and applies.
    accumulated_norm: WireFloat | None = None


_check_step_fields({name: _accepts_none(info.annotation) for name, info in StepRecord.model_fields.items()})


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


class TrainerHello(_Msg):
    type: Literal["hello"]
    protocol: StrictInt
    run_name: str = Field(min_length=1, max_length=200)
    #: Set when reconnecting, so the server continues the same run.
    run_id: WireId | None = None
    #: Continue a run after a restart of the trainer (``GradientMonitor(resume=...)``): ``run_id``
    #: even if it finished; without ``run_id``, the newest run of this ``run_name`` with the same
    #: variables (a new run if there is none).
    resume: StrictBool = False
    variables: list[Annotated[str, Field(max_length=500)]] = Field(max_length=100_000)
    bn_layers: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=10_000)
    clip: ClipSetting
    every: WireCount = 1
    meta: dict[str, str | int | FiniteFloat | bool | None] = Field(default_factory=dict)
    #: Alert kinds on which the server should pause this run automatically.
    pause_on: list[AlertKind] = Field(default_factory=list)
    #: Non-finite steps are skipped by the trainer (weights untouched).
    guard_nonfinite: StrictBool = False
    #: Alert kinds on which the server asks this run to rewind (an ``auto`` ``rewind`` command to the step
    #: before the alert's onset); the trainer holds the snapshots (``Snapshots``).
    rewind_on: list[AlertKind] = Field(default_factory=list)
    #: Layer names the trainer probes for dead ReLU units (``Probe.dead_relu`` keys).
    relu_layers: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=10_000)
    #: Each layer's activation function by layer path (a recurrent layer's: its cell's), e.g. ``{"rnn": "tanh"}``:
    #: a layer whose gradients are all zero is named by what it has (saturated tanh/sigmoid units, dead ReLUs).
    activations: dict[Annotated[str, Field(max_length=500)], Annotated[str, Field(max_length=100)]] = Field(
        default_factory=dict, max_length=10_000
    )
    #: The ``bn_layers`` the model's own code runs in inference mode (a ``model(x, training=True)`` call leaves their
    #: moving statistics alone: fine-tuning with ``base(x, training=False)``); ``frozen_batchnorm`` skips them.
    bn_inference: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=10_000)
    #: The trainer session's unique id (``RunFileHeader.uid``): a run file of this session (offline, or
    #: spooled while the server was away) synced later continues the same run and adds only what is new.
    uid: RunUid | None = None
    #: Sent by ``gradwatch sync`` only: this connection replays a run file. It goes into the run its
    #: ``uid`` created (or, with ``resume``, an unfinished run no trainer is connected to), adds only
    #: what that run lacks, and never displaces a live trainer (1013) nor writes into another run (4400).
    replay: StrictBool = False


class Steps(_Msg):
    type: Literal["steps"]
    records: list[StepRecord] = Field(min_length=1)


class Gap(_Msg):
    """The trainer dropped records (its buffer overflowed while the server was away)."""

    type: Literal["gap"]
    from_step: WireStep
    to_step: WireStep
    dropped: WireCount

    @model_validator(mode="after")
    def _ordered(self) -> Gap:
        if self.from_step > self.to_step:
            raise ValueError(
                f"from_step {self.from_step} is after to_step {self.to_step}; a gap spans from_step..to_step inclusive"
            )
        return self


class Ack(_Msg):
    type: Literal["ack"]
    id: WireId
    state: Literal["applied", "rejected"]
    #: The first step that ran under the change (``None`` when rejected).
    applied_step: WireStep | None = None
    detail: str | None = Field(default=None, max_length=1000)


class Status(_Msg):
    type: Literal["status"]
    state: TrainerState
    step: WireStep


class Probe(_Msg):
    """Activation statistics on a fixed probe batch, measured every N steps (see docs/alerts.md).

    ``dead_relu``: per ReLU layer, the share of units that output zero for every
    example of the probe batch. ``bn_gap``: per BatchNormalization layer, how far
    the batch statistics of its input are from its moving statistics (mean
    absolute z-distance of the batch mean, plus |log| ratio of the variances).
    """

    type: Literal["probe"]
    step: WireStep
    dead_relu: dict[str, WireFloat] = Field(default_factory=dict)
    bn_gap: dict[str, WireFloat] = Field(default_factory=dict)


class VariableSet(_Msg):
    """From step ``from_step`` on, the per-variable vectors of the step records follow ``variables``.

    The run's watched variables changed within the run (fine-tuning: a base model made trainable and
    the model recompiled): names not seen before join the run's variables, and any not listed are not
    watched from that step on. Until the first such message the records follow ``TrainerHello.variables``.
    Sending it again for the same ``from_step`` (after a reconnect) changes nothing.
    """

    type: Literal["variables"]
    from_step: WireCount
    variables: list[Annotated[str, Field(max_length=500)]] = Field(max_length=100_000)


class NonfiniteOrigin(_Msg):
    """Where a non-finite step came from, found by replaying that one batch layer by layer."""

    type: Literal["nonfinite_origin"]
    step: WireStep
    source: Literal["features", "labels", "layer", "loss", "unknown"]
    layer: str | None = Field(default=None, max_length=500)
    detail: str = Field(default="", max_length=2000)


class Mark(_Msg):
    """Sent by ``gradwatch sync``, and by a live trainer every 0.2 s while it streams: the server answers
    ``Marked`` once it has taken every frame before this one and committed their steps to its database
    (a refused frame closes the connection first, so the sync knows which stretch held it; the trainer
    keeps what was sent for a re-send until then)."""

    type: Literal["mark"]
    id: WireId


class Snapshots(_Msg):
    """The steps of the snapshots the trainer holds now, oldest first (sent whenever they change): what a
    ``rewind`` command can go back to."""

    type: Literal["snapshots"]
    steps: list[WireStep] = Field(max_length=1000)


AnyTrainerMessage = Steps | Gap | Ack | Status | Probe | NonfiniteOrigin | VariableSet | Mark | Snapshots
TrainerMessage = Annotated[AnyTrainerMessage, Field(discriminator="type")]
_trainer_message: TypeAdapter[AnyTrainerMessage] = TypeAdapter(TrainerMessage)


def parse_trainer_message(data: str | bytes) -> AnyTrainerMessage:
    """Decode one trainer frame after the handshake; raises pydantic.ValidationError."""
    return _trainer_message.validate_json(data)


def parse_trainer_hello(data: str | bytes) -> TrainerHello:
    return TrainerHello.model_validate_json(data)


# --------------------------------------------------------------------------- server -> trainer


class Welcome(_Msg):
    type: Literal["welcome"] = "welcome"
    protocol: StrictInt = PROTOCOL_VERSION
    run_id: StrictInt


class CommandMessage(_Msg):
    type: Literal["command"] = "command"
    id: StrictInt
    command: Command


class Marked(_Msg):
    """The answer to ``Mark``: every frame before it was taken."""

    type: Literal["marked"] = "marked"
    id: StrictInt


ServerToTrainer = Annotated[Welcome | CommandMessage | Marked, Field(discriminator="type")]
_server_to_trainer: TypeAdapter[Welcome | CommandMessage | Marked] = TypeAdapter(ServerToTrainer)


def parse_server_message(data: str | bytes) -> Welcome | CommandMessage | Marked:
    """Decode one server frame on the trainer side; raises pydantic.ValidationError."""
    return _server_to_trainer.validate_json(data)


# --------------------------------------------------------------------------- browser <-> server


class BrowserHello(_Msg):
    type: Literal["hello"]
    protocol: StrictInt


class Subscribe(_Msg):
    """Ask for live ``steps`` of one run (``None``: run list updates only)."""

    type: Literal["subscribe"]
    run_id: StrictInt | None


#: Runs one page may compare (``Compare.run_ids``).
MAX_COMPARE = 8


class Compare(_Msg):
    """Also receive the live ``steps`` of these runs (a comparison view); replaces the last list, ``[]`` ends it."""

    type: Literal["compare"]
    run_ids: list[StrictInt] = Field(max_length=MAX_COMPARE)


BrowserMessage = Annotated[BrowserHello | Subscribe | Compare, Field(discriminator="type")]
_browser_message: TypeAdapter[BrowserHello | Subscribe | Compare] = TypeAdapter(BrowserMessage)


def parse_browser_message(data: str | bytes) -> BrowserHello | Subscribe | Compare:
    return _browser_message.validate_json(data)


# --------------------------------------------------------------------------- server -> browser
# The page's messages (docs/protocol.md, "server -> browser"); REST returns the same views.


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClipView(_View):
    mode: ClipMode
    threshold: WireFloat | None


class GapView(_View):
    from_step: int
    to_step: int
    dropped: int


class VariableSetView(_View):
    """From ``from_step`` on, the run's step vectors cover these variables (indices into its ``variables``)."""

    from_step: int
    variables: list[int]


class AlertCounts(_View):
    """A run's alerts by severity: one field per ``Severity``."""

    info: int = 0
    warning: int = 0
    critical: int = 0


if tuple(AlertCounts.model_fields) != SEVERITIES:
    raise TypeError(f"AlertCounts fields {tuple(AlertCounts.model_fields)} differ from Severity {SEVERITIES}")


class RunSummary(_View):
    id: int
    name: str
    status: RunStatus
    step: int | None = Field(description="last step received")
    created_at: float
    updated_at: float
    alerts: AlertCounts = Field(default_factory=AlertCounts, description="alerts raised on this run, by severity")
    tags: list[str] = Field(default_factory=list, description="the user's labels (PATCH /api/runs/{id})")
    note: str = Field(default="", description="the user's free-text note")


class RunState(RunSummary):
    """What the browser's ``run`` message carries: a run without its variable lists."""

    clip: ClipView
    paused: bool
    every: int
    meta: dict[str, Any]
    gaps: list[GapView]
    lr: float | None = Field(
        description="learning rate of the latest step that reported one (or of an applied "
        "set_lr until the next step reports)"
    )
    pause_on: list[AlertKind]
    guard_nonfinite: bool
    variable_sets: list[VariableSetView] = Field(
        default_factory=list,
        description="where the watched variables changed within the run, in step order ([]: all of them throughout)",
    )
    snapshots: list[int] = Field(
        default_factory=list,
        description="steps the connected trainer can rewind to "
        "(the newest Snapshots message; [] when none, or no trainer is connected)",
    )


class CommandView(_View):
    id: int
    run_id: int
    type: CommandType
    mode: ClipMode | None
    threshold: float | None
    lr: float | None
    group: str | None = None
    step: int | None = None
    origin: str
    created_at: float
    state: CommandState
    applied_step: int | None
    detail: str | None
    updated_at: float


class AlertUpdate(_View):
    """What an open alert's rule saw after raising it: the evidence at ``step`` and the message it makes."""

    step: int
    evidence: dict[str, WireFloat | int | str | None]
    message: str


class AlertView(_View):
    """One episode of an alert (docs/alerts.md). ``step``, ``evidence`` and ``message``: as raised (they never
    change, except a non-finite origin added to them); ``latest``: the newest update since; ``count``: the
    episode's number for its kind and layer (1 when first raised)."""

    id: int
    run_id: int
    kind: AlertKind
    severity: Severity
    step: int
    last_step: int
    layer: str | None
    layers: list[str]
    evidence: dict[str, ServerFloat | int | str | None]
    message: str
    remedies: list[str]
    count: int
    created_at: float
    updated_at: float
    state: AlertState
    #: The first step at which the condition had been clear for its kind's clear steps (``None`` while open).
    resolved_step: int | None
    latest: AlertUpdate | None


class AlertRuleView(_View):
    muted: bool
    params: dict[str, float | int]


class ProbeView(_View):
    step: WireCount
    dead_relu: dict[str, WireFloat] = Field(default_factory=dict)
    bn_gap: dict[str, WireFloat] = Field(default_factory=dict)


class ServerHello(_View):
    type: Literal["hello"] = "hello"
    protocol: StrictInt = PROTOCOL_VERSION


class RunsMessage(_View):
    """The run list, newest first, on connect."""

    type: Literal["runs"] = "runs"
    runs: list[RunSummary]


class RunMessage(_View):
    type: Literal["run"] = "run"
    run: RunState


class StepsMessage(_View):
    """Exactly the validated records of one trainer ``steps`` frame (``server/views.steps_message`` writes it)."""

    type: Literal["steps"] = "steps"
    run_id: StrictInt
    records: list[StepRecord]


class CommandUpdate(_View):
    type: Literal["command"] = "command"
    run_id: StrictInt
    command: CommandView


class GapMessage(_View):
    type: Literal["gap"] = "gap"
    run_id: StrictInt
    from_step: WireCount
    to_step: WireCount
    dropped: WireCount


class ProbeMessage(_View):
    type: Literal["probe"] = "probe"
    run_id: StrictInt
    probe: ProbeView


class AlertMessage(_View):
    type: Literal["alert"] = "alert"
    run_id: StrictInt
    alert: AlertView


class AlertRulesMessage(_View):
    type: Literal["alert_rules"] = "alert_rules"
    run_id: StrictInt
    rules: dict[AlertKind, AlertRuleView]


PageMessage = (
    ServerHello
    | RunsMessage
    | RunMessage
    | StepsMessage
    | CommandUpdate
    | GapMessage
    | ProbeMessage
    | AlertMessage
    | AlertRulesMessage
)
_page_message: TypeAdapter[PageMessage] = TypeAdapter(Annotated[PageMessage, Field(discriminator="type")])


def page_message_text(message: PageMessage) -> str:
    """One server -> browser frame (floats in the wire spelling)."""
    return dumps(message.model_dump())


def parse_page_message(data: str | bytes) -> PageMessage:
    """Decode one server -> browser frame (as a page or a test would); raises pydantic.ValidationError."""
    return _page_message.validate_json(data)


def version_mismatch_reason(got: object) -> str:
    return (
        f"protocol version {got!r} is not supported; this server speaks {PROTOCOL_VERSION}. "
        "Upgrade gradwatch on both sides."
    )
