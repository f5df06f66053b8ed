"""The overhead benchmark's relay: fits take turns, one at a time, in blocks; a finished or failed fit drops out."""

from __future__ import annotations

import threading

import pytest

from bench.overhead import Relay


def run(relay: Relay, steps: dict[int, int], fail: int | None = None) -> list[int]:
    """Threads that each 'train' for their number of steps, logging who ran; checks that only one runs at a time."""
    log: list[int] = []
    running = threading.Semaphore(1)

    def fit(i: int) -> None:
        try:
            relay.wait(i)  # on_train_begin
            for count in range(1, steps[i] + 1):
                assert running.acquire(blocking=False), "two fits ran at once"
                log.append(i)
                running.release()
                if i == fail and count == 3:
                    raise RuntimeError("this fit failed")
                if count % relay.block == 0:
                    relay.pass_on(i)
                    relay.wait(i)
        except RuntimeError:
            pass
        relay.leave(i)  # on_train_end, or the benchmark's error path

    threads = [threading.Thread(target=fit, args=(i,)) for i in steps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "a fit waited for a turn that never came"
    return log


def test_fits_take_turns_in_blocks():
    log = run(Relay(3, 2), {0: 4, 1: 4, 2: 4})
    assert log == [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("steps", [{0: 2, 1: 5, 2: 3}, {0: 5, 1: 1, 2: 2}])
def test_a_finished_fit_drops_out(steps):
    log = run(Relay(3, 2), steps)
    assert sorted(log) == sorted(i for i, n in steps.items() for _ in range(n))


def test_a_failed_fit_hands_its_turn_on():
    log = run(Relay(2, 4), {0: 6, 1: 6}, fail=0)
    assert log == [0, 0, 0, 1, 1, 1, 1, 1, 1]
