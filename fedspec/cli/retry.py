"""``fedspec retry``: put failed items back in the queue, or done ones (``--rerun``) to run them again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from fedspec.atomic import make_folder, replace_with_retry
from fedspec.cli.common import folder_root, out, shell_path
from fedspec.errors import ConfigError
from fedspec.queue.claims import write_retry
from fedspec.queue.identity import check_worker_name, default_worker_name
from fedspec.queue.status import classify
from fedspec.queue.store import RootPaths
from fedspec.queue.workqueue import find_item, load_queue

REPLACED = "replaced"  # <root>/replaced/<UTC time>/: results moved aside by `retry --rerun`, laid out like the root


def retry(
    items: Optional[List[str]] = typer.Argument(None, help="Item ids to put back."),
    failed: bool = typer.Option(False, "--failed", help="Put back every failed item."),
    rerun: bool = typer.Option(False, "--rerun", help="Run the named done items again from round 1: their CSV and checkpoint "
                               "are moved (kept, not deleted) to <root>/replaced/<UTC time>/, laid out like the root."),
    root: Path = typer.Option(Path("."), help="The shared folder."),
    name: Optional[str] = typer.Option(None, help="Name recorded as the one who reset the items."),
) -> None:
    """Reset the attempts of ITEMS (or of every failed item) so that workers run them again.

    A failed item resumes from its last checkpoint.  A done item is put back
    only with --rerun, and then runs from round 1.
    """
    paths = RootPaths(folder_root(root))
    queue = load_queue(paths)
    if not items and not failed:
        raise ConfigError("retry: name the items to put back, or pass --failed")
    who = check_worker_name(name) if name is not None else default_worker_name()
    named = [find_item(queue, i, paths.queue_file).id for i in (items or [])]
    statuses = {s.id: s for s in classify(paths, queue, with_progress=False).items}
    done = [i for i in named if statuses[i].state == "done"]
    rerun_ids: list[str] = []
    if rerun:  # done, or left by its holder with no result (a CSV deleted by hand): its checkpoint would end it at once
        rerun_ids = [i for i in named if i in done or (statuses[i].state == "running" and statuses[i].moved_on)]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = paths.root / REPLACED / stamp
        moved = [item_id for item_id in rerun_ids if move_aside(paths, item_id, aside)]
        if moved:
            out.print(escape(f"moved the results and checkpoints of {', '.join(moved)} to {aside}"))
    else:  # its CSV is the accepted result: a retry record would change nothing
        for item_id in done:
            out.print(escape(f"{item_id}: done, nothing to put back (`fedspec retry --rerun {item_id} --root "
                             f"{shell_path(paths.root)}` runs it again from round 1, its result kept aside)"))
    targets = [i for i in named if i not in done or rerun]
    if failed:
        targets += [i for i, st in statuses.items() if st.state == "failed" and i not in targets]
    unchanged = [i for i in targets if i not in rerun_ids and statuses[i].state != "failed" and not statuses[i].attempts]
    for item_id in unchanged:  # pending or running: a record would change nothing, so say what the item is doing
        st = statuses[item_id]
        doing = f"running on {st.holder}" if st.state == "running" else st.state
        out.print(escape(f"{item_id}: {doing}, with no failed attempt: nothing to put back"))
    targets = [i for i in targets if i not in unchanged]
    for item_id in targets:
        write_retry(paths, item_id, who, rerun=item_id in rerun_ids)
    reset = [i for i in targets if i not in rerun_ids and statuses[i].state == "running"]  # their failed attempts no longer count
    back = [i for i in targets if i not in reset]
    if back or not reset:
        out.print(f"put back {len(back)} item(s)" + (": " + ", ".join(back) if back else "")
                  + (" (no item has failed)" if failed and not back and not named else ""))
    if reset:
        out.print(f"forgot the failed attempts of {len(reset)} running item(s), which go on: {', '.join(reset)}")


def move_aside(paths: RootPaths, item_id: str, aside: Path) -> bool:
    """Move ``item_id``'s checkpoint folder, then its CSV, under ``aside`` (laid out like the root); False if neither is there.

    The CSV goes last: until it moves the item is done, so a failure (or a
    crash) in between leaves a done item, which a second ``--rerun`` finishes
    moving.  A failed move puts back what had moved and raises.
    """
    moves = [(paths.checkpoint_folder(item_id), aside / paths.checkpoints.name / item_id),
             (paths.result_csv(item_id), aside / paths.results.name / paths.result_csv(item_id).name)]
    moved: list[tuple[Path, Path]] = []
    try:
        for src, dst in moves:
            if not src.exists():  # a done item of a root from before checkpoints were kept, or half moved before
                continue
            if dst.exists():
                raise ConfigError(f"{dst}: already there; nothing moved")
            make_folder(dst.parent, paths.root)
            replace_with_retry(src, dst)
            moved.append((src, dst))
    except BaseException:
        for src, dst in reversed(moved):
            replace_with_retry(dst, src)
        raise
    return bool(moved)
