"""``fedspec retry``: put failed items back in the queue."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from fedspec.cli.common import folder_root, out
from fedspec.errors import ConfigError
from fedspec.queue.claims import write_retry
from fedspec.queue.identity import check_worker_name, default_worker_name
from fedspec.queue.status import classify
from fedspec.queue.store import RootPaths
from fedspec.queue.workqueue import find_item, load_queue


def retry(
    items: Optional[List[str]] = typer.Argument(None, help="Item ids to put back."),
    failed: bool = typer.Option(False, "--failed", help="Put back every failed item."),
    root: Path = typer.Option(Path("."), help="The shared folder."),
    name: Optional[str] = typer.Option(None, help="Name recorded as the one who reset the items."),
) -> None:
    """Reset the attempts of ITEMS (or of every failed item) so that workers run them again."""
    paths = RootPaths(folder_root(root))
    queue = load_queue(paths)
    if not items and not failed:
        raise ConfigError("retry: name the items to put back, or pass --failed")
    named = [find_item(queue, i, paths.queue_file).id for i in (items or [])]
    states = {s.id: s.state for s in classify(paths, queue, with_progress=False).items}
    for item_id in named:
        if states[item_id] == "done":  # its CSV is the accepted result: a retry record would change nothing
            out.print(escape(f"{item_id}: done, nothing to put back (to run it again from round 1, delete "
                             f"{paths.result_csv(item_id)} and {paths.checkpoint_folder(item_id)})"))
    targets = [i for i in named if states[i] != "done"]
    if failed:
        targets += [i for i, state in states.items() if state == "failed" and i not in targets]
    who = check_worker_name(name) if name else default_worker_name()
    for item_id in targets:
        write_retry(paths, item_id, who)
    out.print(f"put back {len(targets)} item(s)" + (": " + ", ".join(targets) if targets else ""))
