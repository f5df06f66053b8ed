"""The trainer's link: what the trainer sends the server (trainer -> server) and what the server answers."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, StrictBool, StrictInt, TypeAdapter, model_validator

from ..records import GAP_FIELDS
from ..records import check_model_fields as _check_record_fields
from ..stepfields import check_model_fields as _check_step_fields
from ..wirejson import FiniteFloat, WireCount, WireElementCount, WireFloat, WireId, WireStep
from .commands import ClipSetting, Command
from .common import PROTOCOL_VERSION, _Msg
from .run_files import RunUid
from .vocabulary import AlertKind, ClipMode, TrainerState


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


_check_record_fields("Gap", tuple(n for n in Gap.model_fields if n != "type"), GAP_FIELDS)


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
