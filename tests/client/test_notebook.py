"""Notebooks, for real: a ``.ipynb`` executed by nbclient on a real IPython kernel, its output in Chromium.

The notebook loads the extension, shows the dashboard (which starts the kernel's embedded
server) and trains with a ``GradientMonitor`` given no server or token. While the kernel
still runs, the cell's HTML output is served from a page on ``localhost`` — another port, as
JupyterLab's page would be — and Chromium must show the live run inside the frame. The
screenshot is kept in ``test-artifacts/notebook.png`` (or under ``$GRADWATCH_ARTIFACTS``).
"""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = [pytest.mark.browser, pytest.mark.slow]

KERNEL = "gradwatch-test-python"

# The training cell follows keras-io's "The Sequential model" and "Training & evaluation with the
# built-in methods" guides (keras-io/guides/sequential_model.py, training_with_built_in_methods.py):
# a small Sequential classifier compiled with a built-in loss and trained with fit().
CELLS = [
    "import os\nos.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'",
    "%load_ext gradwatch",
    "%gradwatch --height 700",
    """\
import keras, numpy as np, os, time
from gradwatch import GradientMonitor

class Pace(keras.callbacks.Callback):  # holds the run at step 60 until the test has watched it live
    def __init__(self):
        super().__init__()
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        deadline = time.monotonic() + 180
        while self.step == 60 and not os.path.exists('release') and time.monotonic() < deadline:
            time.sleep(0.05)

rng = np.random.default_rng(0)
x = rng.normal(size=(2048, 20)).astype('float32')
y = (x[:, :3].sum(axis=1) > 0).astype('int32')
model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(32, activation='relu'),
                          keras.layers.Dense(2)], name='notebook_mlp')
model.compile(optimizer=keras.optimizers.Adam(1e-3),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
history = model.fit(x, y, batch_size=32, epochs=3, verbose=0,
                    callbacks=[GradientMonitor(run_name='notebook run'), Pace()])
len(history.history['loss'])""",
    "import gradwatch.notebook as gn\nprint(gn.ensure_server().url)",
]


@pytest.fixture
def kernel_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec for this very interpreter (the venv under test), found through ``$JUPYTER_PATH``."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


@pytest.fixture
def page_host() -> Iterator[tuple[str, dict[str, str]]]:
    """A static HTTP server on localhost serving ``pages`` (path -> HTML): the notebook front end's stand-in."""
    pages: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write((body or "not found").encode())

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{httpd.server_address[1]}", pages
    finally:
        httpd.shutdown()
        httpd.server_close()


def html_outputs(cell: Any) -> list[str]:
    return [
        o["data"]["text/html"]
        for o in cell.outputs
        if o.get("output_type") == "display_data" and "text/html" in o.get("data", {})
    ]


def artifacts_dir() -> Path:
    path = Path(os.environ.get("GRADWATCH_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_notebook_shows_the_live_run_inline(
    kernel_spec: str, page_host: tuple[str, dict[str, str]], browser_page: Any, tmp_path: Path
) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nb.metadata["kernelspec"] = {"name": kernel_spec, "display_name": kernel_spec, "language": "python"}
    client = NotebookClient(nb, timeout=240, kernel_name=kernel_spec, resources={"metadata": {"path": str(tmp_path)}})
    # A home of its own: the embedded server's database and no token file of the machine's user.
    env = {**os.environ, "HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": "-1"}
    for name in ("GRADWATCH_SERVER", "GRADWATCH_TOKEN", "GRADWATCH_TOKEN_FILE"):
        env.pop(name, None)
    base, pages = page_host
    page = browser_page
    with client.setup_kernel(env=env):
        for index in range(3):  # up to %gradwatch: the embedded server is up, nothing trained yet
            client.execute_cell(nb.cells[index], index)
        (frame_html,) = html_outputs(nb.cells[2])
        assert "<iframe" in frame_html and "/login?code=" in frame_html and "token" not in frame_html
        # The notebook's page is on localhost: the frame must follow it there, or the
        # browser would withhold the SameSite=Strict login cookie inside the frame.
        pages["/notebook.html"] = f"<!doctype html><html><body><h1>notebook</h1>{frame_html}</body></html>"
        page.goto(f"{base}/notebook.html")
        handle = page.wait_for_selector("iframe[title='gradwatch dashboard']")
        assert handle.get_attribute("src").startswith("http://localhost:")
        frame = handle.content_frame()
        assert frame is not None

        # Train in the kernel while the page watches: the run appears and grows live.
        failure: list[BaseException] = []

        def train() -> None:
            try:
                client.execute_cell(nb.cells[3], 3)
            except BaseException as err:  # reported by the test thread
                failure.append(err)

        trainer = threading.Thread(target=train)
        trainer.start()
        try:
            frame.locator("#run-name").get_by_text("notebook run").wait_for(timeout=60_000)
            # Training is held after step 59 (the Pace callback): the page must show the run grow while fit()
            # is still running, however slow the machine (the last few steps wait for the next batch's read).
            frame.wait_for_function("window.gradwatch.steps > 20", timeout=60_000)
            frame.wait_for_function("window.gradwatch.lastStep >= 40", timeout=60_000)
            live = frame.evaluate("window.gradwatch.lastStep")
            still_training = trainer.is_alive()
        finally:
            (tmp_path / "release").touch()
            trainer.join(240)
        assert not failure, failure
        assert nb.cells[3].outputs[-1]["data"]["text/plain"] == "3"  # fit ran all its epochs
        frame.wait_for_function("window.gradwatch.lastStep >= 191", timeout=30_000)  # 3 epochs x 64 steps
        page.screenshot(path=str(artifacts_dir() / "notebook.png"), full_page=True)
        client.execute_cell(nb.cells[4], 4)
        server_url = "".join(o.get("text", "") for o in nb.cells[4].outputs).strip()
        assert server_url.startswith("http://127.0.0.1:") and server_url in frame_html
        assert (tmp_path / ".gradwatch" / "notebook.db").is_file()
        nbformat.write(nb, tmp_path / "executed.ipynb")
    assert 40 <= live <= 59 and still_training  # seen while training was still going on
    assert not page.gradwatch_problems
