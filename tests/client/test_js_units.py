"""The page's unit tests (tests/client/js/*.test.mjs, `node --test`) run with the Python suite.

Without node they skip, except under ``CI=true`` where they fail: CI must never pass by skipping
(scripts/test.sh installs Debian's nodejs first)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

JS_TESTS = Path(__file__).resolve().parent / "js"


def test_the_page_unit_tests_pass() -> None:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("node is needed for tests/client/js under CI=true (Debian: apt-get install nodejs)")
        pytest.skip("node is not installed (Debian: apt-get install nodejs)")
    files = sorted(str(p) for p in JS_TESTS.glob("*.test.mjs"))  # files, not a folder: read alike by every Node
    assert files, "no page unit tests found"
    done = subprocess.run(
        [node, "--test", *files],
        cwd=JS_TESTS.parents[2],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout, done.stdout[-3000:]
