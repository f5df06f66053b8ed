"""``MonitorConfig``: the one declaration of the monitor's options, and its two doors' view of it."""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gradwatch.trainer_hooks.config import ENV_VARS, OPTION_FIELDS, MonitorConfig
from gradwatch.trainer_hooks.monitor import GradientMonitor

from gradwatch.tokens import resolve_token

ROOT = Path(__file__).resolve().parents[2]


def test_the_callback_arguments_are_the_config_fields_one_to_one() -> None:
    params = [p for p in inspect.signature(GradientMonitor.__init__).parameters.values() if p.name != "self"]
    assert params[-1].name == "config" and params[-1].default is None
    assert [(p.name, p.default) for p in params[:-1]] == [(f.name, f.default) for f in OPTION_FIELDS]


def test_every_environment_variable_the_trainer_reads_stands_for_a_field() -> None:
    sources = [*sorted((ROOT / "trainer_hooks").glob("*.py")), ROOT / "gradwatch" / "tokens.py"]
    read = {name for path in sources for name in re.findall(r"[\"'](GRADWATCH_[A-Z_]+)[\"']", path.read_text())}
    assert read == set(ENV_VARS)
    assert set(ENV_VARS.values()) <= {f.name for f in OPTION_FIELDS}


def test_each_variable_fills_its_field_left_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRADWATCH_SERVER", "http://10.0.0.7:9999/")
    monkeypatch.setenv("GRADWATCH_MODE", "offline")
    monkeypatch.setenv("GRADWATCH_LOG_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("GRADWATCH_TOKEN", "from-the-environment")
    config = MonitorConfig()
    assert (config.server_url, config.run_mode, config.run_dir) == (
        "http://10.0.0.7:9999",
        "offline",
        tmp_path / "runs",
    )
    assert not config.prove_server  # a named server is trusted with the token
    assert resolve_token(config.token) == "from-the-environment"
    given = MonitorConfig(server="http://127.0.0.1:1", mode="online", log_dir=tmp_path, token="given-token")
    assert (given.server_url, given.run_mode, given.run_dir) == ("http://127.0.0.1:1", "online", tmp_path)
    assert resolve_token(given.token) == "given-token"


def test_constructing_starts_and_writes_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GRADWATCH_LOG_DIR", raising=False)
    threads = threading.active_count()
    monitor = GradientMonitor(mode="offline", run_name="quiet")
    assert monitor.config.run_dir == tmp_path / ".gradwatch" / "runs"
    assert list(tmp_path.iterdir()) == [] and threading.active_count() == threads
    assert monitor.session is None


def test_keywords_and_a_config_are_the_same_monitor() -> None:
    probe = np.zeros((4, 3), np.float32)
    options: dict[str, Any] = {"every": 5, "pause_on": ["nonfinite"], "probe_data": probe, "spool_mb": 0}
    by_keywords = GradientMonitor(**options)
    by_config = GradientMonitor(config=MonitorConfig(**options))
    assert by_keywords.config == by_config.config
    assert by_keywords.config.pause_on == ("nonfinite",) and by_config.config.probe_data is probe
    with pytest.raises(TypeError, match=r"takes no other options, got every=2.*dataclasses.replace"):
        GradientMonitor(config=MonitorConfig(), every=2)
    with pytest.raises(TypeError, match=r"got token:") as raised:
        GradientMonitor(config=MonitorConfig(), token="a-secret-token")
    assert "a-secret-token" not in str(raised.value)


def test_a_config_is_frozen_and_replace_resolves_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADWATCH_SERVER", raising=False)
    config = MonitorConfig(token="a-secret-token")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.every = 3  # type: ignore[misc]
    again = dataclasses.replace(config, every=3)
    assert again.every == 3 and again.prove_server and config.every == 1
    assert "a-secret-token" not in repr(config)
    with pytest.raises(ValueError, match=r"every=0 must be a whole number >= 1"):
        dataclasses.replace(config, every=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"probe_every": 0}, "probe_every=0 must be a whole number >= 1"),
        ({"update_ratio_every": -1}, "update_ratio_every=-1 must be a whole number >= 0"),
        ({"pause_on": "nonfinite"}, "pause_on='nonfinite': ['nonfinite'] not alert kinds"),
        ({"pause_on": ("nan",)}, "['nan'] not alert kinds; choose from"),
        ({"max_buffer_mb": 0}, "max_buffer_mb=0 must be a positive number of MiB"),
        ({"flush_timeout": float("inf")}, "flush_timeout=inf must be a number of seconds >= 0"),
        ({"spool_mb": True}, "spool_mb=True must be a number of MiB >= 0"),
        ({"transport_options": ["connect_fn"]}, "transport_options=['connect_fn'] must be a dict"),
    ],
)
def test_each_bad_option_is_named_with_its_fix(kwargs: dict[str, Any], message: str) -> None:
    for make in (MonitorConfig, GradientMonitor):
        with pytest.raises(ValueError, match=re.escape(message)):
            make(**kwargs)


def test_the_config_is_exported_and_needs_no_tensorflow() -> None:
    code = "import sys, gradwatch; gradwatch.MonitorConfig(every=3); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"
    import gradwatch

    assert gradwatch.MonitorConfig is MonitorConfig


def test_the_options_read_as_attributes_in_effect_and_cannot_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADWATCH_SERVER", raising=False)
    monkeypatch.setenv("GRADWATCH_MODE", "offline")
    monitor = GradientMonitor(every=2, pause_on=["nonfinite"])
    assert (monitor.every, monitor.pause_on) == (2, ("nonfinite",))
    assert (monitor.server, monitor.mode) == ("http://127.0.0.1:8765", "offline")  # what None resolved to
    with pytest.raises(AttributeError, match=r"monitor.every is read-only.*dataclasses.replace"):
        monitor.every = 5
    assert not hasattr(monitor, "evry") and monitor.every == 2
