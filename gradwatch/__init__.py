"""gradwatch: live gradient-health monitoring for Keras/TensorFlow training.

The trainer side (``GradientMonitor``) needs TensorFlow; the server side does
not. Exports are therefore resolved lazily so that ``import gradwatch`` works in
either environment and only pulls in what is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from gradwatch.trainer_hooks.config import MonitorConfig
    from gradwatch.trainer_hooks.monitor import GradientMonitor

__all__ = ["GradientMonitor", "MonitorConfig", "__version__", "load_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext gradwatch``: adds the ``%gradwatch`` magic (see ``gradwatch.notebook``)."""
    from gradwatch.notebook import load_ipython_extension as load

    load(ipython)


def __getattr__(name: str) -> Any:
    if name == "GradientMonitor":
        from gradwatch.trainer_hooks.monitor import GradientMonitor

        return GradientMonitor
    if name == "MonitorConfig":  # needs no TensorFlow
        from gradwatch.trainer_hooks.config import MonitorConfig

        return MonitorConfig
    raise AttributeError(f"module 'gradwatch' has no attribute {name!r}")
