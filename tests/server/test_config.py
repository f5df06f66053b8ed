"""ServerConfig validation: clear errors naming the value and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from gradwatch.server.config import ServerConfig


def test_defaults():
    c = ServerConfig()
    assert c.host == "127.0.0.1" and c.port == 8765 and c.flush_interval == 0.2
    assert c.db_path == Path.home() / ".gradwatch" / "gradwatch.db"
    assert set(c.effective_allowed_hosts) == {"localhost", "127.0.0.1", "::1"}
    assert c.is_loopback


def test_bind_host_is_allowed_and_not_loopback():
    c = ServerConfig(host="0.0.0.0")
    assert "0.0.0.0" in c.effective_allowed_hosts and not c.is_loopback
    c = ServerConfig(host="10.0.0.5", allowed_hosts=("gw.example",))
    assert c.effective_allowed_hosts == ("gw.example", "10.0.0.5")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"port": -1}, "port=-1"),
        ({"port": 70000}, "port=70000"),
        ({"port": True}, "port=True"),
        ({"host": ""}, "host=''"),
        ({"flush_interval": 0}, "flush_interval=0"),
        ({"flush_interval": 5.0}, "flush_interval=5.0"),
        ({"flush_interval": float("nan")}, "flush_interval=nan"),
        ({"viewer_queue_size": 0}, "viewer_queue_size=0"),
        ({"max_frame_bytes": 10}, "max_frame_bytes=10"),
        ({"allowed_hosts": ()}, "allowed_hosts=()"),
        ({"allowed_hosts": ("http://x",)}, "allowed_hosts"),
        ({"log_level": "loud"}, "log_level='loud'"),
        ({"hello_timeout": 0}, "hello_timeout=0"),
    ],
)
def test_bad_values_are_named(kwargs, needle):
    with pytest.raises(ValueError, match=None) as exc:
        ServerConfig(**kwargs)
    assert needle in str(exc.value)


def test_short_token_is_refused_without_echoing_it():
    with pytest.raises(ValueError) as exc:
        ServerConfig(token="abc")
    assert "abc" not in str(exc.value)


def test_paths_are_expanded_and_nothing_is_created(tmp_path):
    c = ServerConfig(db_path="~/x/y.db", token_file=str(tmp_path / "t"))  # type: ignore[arg-type]
    assert c.db_path == Path.home() / "x" / "y.db"
    assert c.token_file == tmp_path / "t"
    assert not (tmp_path / "t").exists()
