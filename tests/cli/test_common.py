"""Root folder checks shared by the commands."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from fedspec.cli.common import writable_root


def _check_many(root: str, times: int, errors) -> None:
    for _ in range(times):
        try:
            writable_root(Path(root))
        except Exception as err:  # noqa: BLE001 - the test counts every failure
            errors.put(str(err))
            return


def test_workers_starting_together_all_pass_the_write_check(tmp_path: Path) -> None:
    # Workers started at the same moment each probe the root; a probe file shared between them made one
    # worker's unlink fail ("root folder is not writable (No such file or directory)").
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_check_many, args=(str(tmp_path), 300, errors)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    found = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert found == []
    assert all(p.exitcode == 0 for p in procs)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no probe left behind


def test_a_log_line_under_a_progress_bar_is_printed_above_it() -> None:
    """A worker's warning (client failed, batch size halved) during a round's bar goes through the bar's console.

    Written to the terminal behind rich's back, it landed in the bar's line and
    the next refresh garbled both.
    """
    import io
    import logging

    from rich.console import Console
    from rich.progress import Progress, TextColumn

    from fedspec.cli.common import _CurrentStderr

    screen = io.StringIO()
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("fedspec.tests.bar")
    log.addHandler(handler)
    log.propagate = False
    try:
        with Progress(TextColumn("{task.description}"), console=Console(file=screen, force_terminal=True, width=80),
                      transient=True) as bar:
            bar.add_task("fedavg round 1/2")
            log.warning("client failed, attempt 1 of 3")
    finally:
        log.removeHandler(handler)
    assert "WARNING client failed, attempt 1 of 3" in screen.getvalue()
