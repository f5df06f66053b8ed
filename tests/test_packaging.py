"""The `gradwatch` distribution installs under one package name, as a wheel and editable."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = [
    "gradwatch",
    "gradwatch.protocol",
    "gradwatch.tokens",
    "gradwatch.cli",
    "gradwatch.server.app",
    "gradwatch.trainer_hooks.monitor",
    "gradwatch.client",
]
CHECK = """
import importlib, sys
for name in {modules!r}:
    importlib.import_module(name)
from gradwatch import GradientMonitor
from gradwatch.client import CLIENT_DIR
assert (CLIENT_DIR / "index.html").is_file(), CLIENT_DIR
for generic in ("server", "client", "trainer_hooks"):
    try:
        importlib.import_module(generic)
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit(f"a bare top-level {{generic!r}} package is importable")
import gradwatch.server
print(gradwatch.server.__file__)
"""


def run_check(python: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run(
        [python, "-c", CHECK.format(modules=MODULES)], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        timeout=240,
        capture_output=True,
    )
    return next(out.glob("gradwatch-*.whl"))


def test_wheel_holds_only_the_gradwatch_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.startswith("gradwatch-")}
    assert top == {"gradwatch"}
    # Every source file of the three rooms is in the wheel (a subpackage missing from
    # pyproject's package list would only show up at import time on a user's machine).
    for room, package in (("server", "server"), ("trainer_hooks", "trainer_hooks"), ("client", "client")):
        for path in (ROOT / room).rglob("*"):
            if path.suffix in (".py", ".js", ".html", ".css") and "__pycache__" not in path.parts:
                assert f"gradwatch/{package}/{path.relative_to(ROOT / room).as_posix()}" in names, path


def test_wheel_install_imports(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(
        subprocess.check_output(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
    )
    # Dependencies come from this environment's site-packages; a plain path
    # entry does not run its .pth files, so the editable finder stays out.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        timeout=240,
        capture_output=True,
    )
    where = run_check(str(venv / "bin" / "python"), cwd=tmp_path)
    assert Path(where).is_relative_to(site)


def test_editable_install_imports_from_the_source_tree(tmp_path: Path) -> None:
    where = run_check(sys.executable, cwd=tmp_path)
    assert Path(where) == ROOT / "server" / "__init__.py"
