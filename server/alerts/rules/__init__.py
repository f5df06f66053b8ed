"""The alert rules, one module per kind (each with its ``KindSpec`` beside the code that detects it).

``base`` holds what every rule shares (``RunInfo``, ``Hit``, ``Rule``); ``lr_rise``, ``exploding_trend`` and
``probe`` are helpers of the rules that use them. ``server.alerts.kinds`` lists the rules in evaluation order.
"""

from __future__ import annotations

from .base import KERNEL_SUFFIXES as KERNEL_SUFFIXES
from .base import Hit as Hit
from .base import Rule as Rule
from .base import RunInfo as RunInfo
from .base import kernel_indices as kernel_indices
from .clip_saturated import ClipSaturated as ClipSaturated
from .dead_relu import DeadRelu as DeadRelu
from .diverging import Diverging as Diverging
from .exploding import ExplodingGradients as ExplodingGradients
from .frozen_batchnorm import FrozenBatchnorm as FrozenBatchnorm
from .lr_rise import LrRise as LrRise
from .nonfinite import Nonfinite as Nonfinite
from .vanishing import VanishingGradients as VanishingGradients
