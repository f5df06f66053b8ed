"""``gradwatch serve`` under cProfile (its event-loop thread): SIGUSR1 writes the stats to argv[1]."""

from __future__ import annotations

import cProfile
import signal
import sys
from types import FrameType

from gradwatch.cli import main

if __name__ == "__main__":
    out = sys.argv[1]
    profiler = cProfile.Profile()

    def dump(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(out)

    signal.signal(signal.SIGUSR1, dump)
    profiler.enable()
    sys.exit(main(sys.argv[2:]))
