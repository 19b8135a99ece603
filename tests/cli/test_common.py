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
