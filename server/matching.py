"""Which stored run a trainer's hello continues: its run id, its session's run, a resumed run of the same
name and layout, or the run a replayed file goes into; None: a new run. Refusals raise ``ProtocolError``."""

from __future__ import annotations

import logging
from collections.abc import Container

from gradwatch.protocol import CloseCode, TrainerHello

from . import replay
from .errors import ProtocolError
from .store import RunRow, Store

log = logging.getLogger("gradwatch.server")


def _same_names(recorded: list[str], now: list[str], loose: bool) -> bool:
    """Equal; or, ``loose`` (a resumed run), equal but for a leading scope one side lacks: Keras'
    ``load_model`` drops the model's name from its variables' paths (``seq/dense/kernel`` -> ``dense/kernel``)."""
    if recorded == now:
        return True
    return (
        loose
        and len(recorded) == len(now)
        and all(a == b or a.endswith("/" + b) or b.endswith("/" + a) for a, b in zip(recorded, now))
    )


def same_layout(run: RunRow, hello: TrainerHello) -> bool:
    """The hello's statistics fit the run's columns (same variables and BN layers, in order).

    The hello names the run's first variable set; variables that joined later (``varsets.py``) follow it.
    """
    first = [run.variables[i] for i in run.variable_sets[0][1]] if run.variable_sets else run.variables
    return _same_names(first, hello.variables, hello.resume) and _same_names(
        run.bn_layers, hello.bn_layers, hello.resume
    )


async def replay_target(store: Store, connected: Container[int], hello: TrainerHello) -> RunRow | None:
    """The run a replayed file (``hello.replay``) goes into; None: a new run. Refuses what would
    overwrite: another session's run, a finished run it did not record, a run with a live trainer
    (``connected``: the runs with one)."""
    if hello.uid is None:
        raise ProtocolError(CloseCode.BAD_MESSAGE, "a replay needs the hello's uid (its run file's session)")
    own = await store.call(replay.run_for_uid, store.conn, hello.uid)
    if own is not None:
        if hello.run_id is not None and hello.run_id != own:
            raise ProtocolError(
                CloseCode.BAD_MESSAGE,
                f"refused: the file names run {hello.run_id} but its session recorded run {own}",
            )
        run = await store.call(store.get_run, own)
    elif hello.run_id is not None and not hello.resume:
        run = await store.call(store.get_run, hello.run_id)
        if run is not None:
            raise ProtocolError(
                CloseCode.BAD_MESSAGE,
                f"refused: the file names run {hello.run_id}, another session's run; a sync never writes into it",
            )
    else:
        run = await run_to_continue(store, hello)
        if run is not None and run.status == "finished":
            raise ProtocolError(
                CloseCode.BAD_MESSAGE, f"refused: run {run.id} is finished; a sync never reopens or rewrites it"
            )
    if run is not None and run.id in connected:
        # "try again later", not a refusal: the file's steps are welcome once that trainer ended
        raise ProtocolError(
            CloseCode.TRY_AGAIN_LATER, f"run {run.id} has its trainer connected; sync the file once it has ended"
        )
    return run


async def run_to_continue(store: Store, hello: TrainerHello) -> RunRow | None:
    """The run a hello continues: its ``run_id`` (unless finished, or resumed), or with ``resume``
    and no id the newest run of that name recorded with the same variables; None: a new run."""
    if hello.run_id is None and hello.uid is not None and not hello.replay:
        # a live trainer whose first welcome got lost: its session's run, if the server made one
        own = await store.call(replay.run_for_uid, store.conn, hello.uid)
        run = None if own is None else await store.call(store.get_run, own)
        if run is not None and run.status != "finished":
            return run
    if hello.run_id is not None:
        run = await store.call(store.get_run, hello.run_id)
        if run is None and hello.resume:
            raise ProtocolError(
                CloseCode.BAD_MESSAGE,
                f"resume: there is no run {hello.run_id} on this server; "
                "pass resume='auto' or a run id from the dashboard",
            )
        if run is not None and run.status == "finished" and not hello.resume:
            log.info("run %d is finished; trainer %r starts a new run", run.id, hello.run_name)
            return None
        return run
    if not hello.resume:
        return None
    runs = await store.call(store.list_runs)  # newest first
    return next((r for r in runs if r.name == hello.run_name and same_layout(r, hello)), None)
