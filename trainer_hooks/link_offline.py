"""The offline link strategy: the run file is the link itself; it never opens a socket nor fails over.

The same sender writes every message to the file (``spool.py``); ``gradwatch sync`` uploads it later.
"""

from __future__ import annotations

from collections.abc import Callable

from gradwatch.protocol import TrainerHello

from .link import LinkHost
from .spool import RunFile


class OfflineLink:
    def __init__(self, host: LinkHost, hello: Callable[[int | None], TrainerHello], run_file: RunFile) -> None:
        self.host = host
        self._hello = hello
        self.run_file = run_file

    def run(self) -> None:
        host, run_file = self.host, self.run_file
        try:
            run_file.open(self._hello(None).model_dump_json())
            host.attach(run_file)
            while not host.stopping:
                host.pump(run_file)
        except Exception as err:
            host.fail(f"cannot write the offline run file {run_file.path} ({err})")
        finally:
            host.detach()
