"""Dockerfile and docker-compose.yml: structure, and consistency with the real CLI and app (no Docker engine needed)."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gradwatch.cli import _serve_parser
from gradwatch.tokens import TOKEN_ENV

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def serve_help() -> str:
    r = subprocess.run(
        [sys.executable, "-m", "gradwatch.cli", "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0
    return r.stdout


def dockerfile_instruction(name: str) -> str:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip().upper().startswith(name + " ")]
    assert len(lines) == 1, (name, lines)
    return lines[0][len(name) + 1 :].strip()


def parse_serve(args: list[str]) -> argparse.Namespace:
    """Parse ``gradwatch serve ...`` with the CLI's own parser (fails on any unknown flag)."""
    assert args[:2] == ["gradwatch", "serve"], args
    parser = argparse.ArgumentParser(prog="gradwatch")
    _serve_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(args[1:])


def flags(args: list[str]) -> set[str]:
    return {a for a in args if a.startswith("--")}


def test_dockerfile(serve_help):
    assert dockerfile_instruction("FROM") == "python:3.11-slim"
    assert re.search(r'pip install "?\.\[server\]"?', (REPO / "Dockerfile").read_text())
    cmd = json.loads(dockerfile_instruction("CMD"))
    ns = parse_serve(cmd)
    assert ns.host == "0.0.0.0" and ns.allowed_host and "localhost" in ns.allowed_host
    assert all(f in serve_help for f in flags(cmd))
    health = dockerfile_instruction("HEALTHCHECK")
    assert f"http://127.0.0.1:{ns.port}/api/health" in health
    assert f"EXPOSE {ns.port}" in (REPO / "Dockerfile").read_text()
    for copied in re.findall(r"^COPY (\S+) ", (REPO / "Dockerfile").read_text(), re.M):
        for path in copied.split():
            assert (REPO / path).exists(), path


def test_compose_server_service(compose, serve_help):
    server = compose["services"]["server"]
    cmd = server["command"]
    assert cmd == json.loads(dockerfile_instruction("CMD"))  # the image and compose run the same thing
    ns = parse_serve(cmd)
    assert all(f in serve_help for f in flags(cmd))
    # token from the environment, under the name the server reads
    assert TOKEN_ENV == "GRADWATCH_TOKEN" and "${GRADWATCH_TOKEN" in server["environment"][TOKEN_ENV]
    # the port published (on the host's loopback only) is the one served
    assert server["ports"] == [f"127.0.0.1:{ns.port}:{ns.port}"]
    # the database lives on a named volume declared at the top level
    volume, mount = server["volumes"][0].split(":")[:2]
    assert volume in compose["volumes"] and str(ns.db).startswith(mount.rstrip("/") + "/")
    test = " ".join(server["healthcheck"]["test"])
    assert f"http://127.0.0.1:{ns.port}/api/health" in test
    assert server["healthcheck"]["interval"] and server["healthcheck"]["retries"] >= 1


def test_compose_trainer_service(compose):
    trainer = compose["services"]["trainer"]
    server_cmd = parse_serve(compose["services"]["server"]["command"])
    env = trainer["environment"]
    url = env["GRADWATCH_SERVER"]
    m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", url)
    assert m, url
    host, port = m.group(1), int(m.group(2))
    assert host in compose["services"] and port == server_cmd.port
    assert host in server_cmd.allowed_host  # its Host header passes the DNS-rebinding guard
    assert env[TOKEN_ENV] == compose["services"]["server"]["environment"][TOKEN_ENV]
    assert trainer["depends_on"]["server"]["condition"] == "service_healthy"
    dockerfile = REPO / trainer["build"]["dockerfile"]
    assert dockerfile.exists() and "demo_trainer.py" in dockerfile.read_text()
    script = (REPO / "docker" / "demo_trainer.py").read_text()
    assert 'os.environ["GRADWATCH_SERVER"]' in script and "GradientMonitor(" in script
    compile(script, "demo_trainer.py", "exec")


def test_health_route_exists(tmp_path):
    from gradwatch.server.app import create_app
    from gradwatch.server.config import ServerConfig

    app = create_app(ServerConfig(db_path=tmp_path / "h.db", token="h" * 32))
    assert "/api/health" in {getattr(r, "path", None) for r in app.routes}


def test_compose_command_is_a_valid_server_config(compose, tmp_path):
    from gradwatch.server.config import ServerConfig

    ns = parse_serve(compose["services"]["server"]["command"])
    config = ServerConfig(host=ns.host, port=ns.port, db_path=tmp_path / "x.db", allowed_hosts=tuple(ns.allowed_host))
    assert not config.is_loopback and "server" in config.effective_allowed_hosts
    assert shlex.join(compose["services"]["server"]["command"])  # plain strings only
