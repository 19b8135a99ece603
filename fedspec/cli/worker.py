"""``fedspec worker``: claim items from the shared queue and train them, one at a time."""

from __future__ import annotations

import functools
import re
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from fedspec.cli.common import console, folder_root, out, round_line, setup_logging, shell_path, writable_root
from fedspec.config import load_grid, origin
from fedspec.fl.partition import check_splittable
from fedspec.queue.identity import check_worker_name, default_worker_name, hold_name
from fedspec.queue.store import RootPaths
from fedspec.queue.worker import LEFT_TO_OTHERS, StopRequested, Worker, WorkerEvents, WorkerSettings
from fedspec.queue.workqueue import QueueItem, add_items, load_queue, same_spec_elsewhere

# Sync clients that propagate files with unbounded delay and ignore locks across machines.
SYNC_FOLDER_HINTS = re.compile(r"dropbox|mobile documents|clouddocs|icloud|google ?drive|cloudstorage|onedrive", re.I)

SAY_SETTLE_S = 5.0  # a settle window at least this long is said before it is waited out


def default_settle(root: Path) -> float:
    """Seconds to wait after writing a claim: 0 where the lock excludes, a minute in a sync folder."""
    return 60.0 if SYNC_FOLDER_HINTS.search(str(root)) else 0.0


class RoundBar:
    """A bar under the worker's lines for the round in flight, on a terminal: a text round takes minutes.

    Transient: the round's line replaces it when the round is committed.
    """

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
                                 TextColumn("left in the round"), console=console, transient=True)
        self.task: int | None = None

    def step(self, item: QueueItem, rnd: int, done: int, total: int) -> None:
        what = f"  {item.id} round {rnd}/{item.rounds}" + (" evaluating" if done >= total else "")
        if self.task is None:  # added whole: a refresh in between drew an empty bar
            self.task = self.progress.add_task(what, total=total, completed=done)
        else:
            self.progress.update(self.task, description=what, completed=done, total=total)

    def ended(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None


def _add_grid(root: Path, grid: Path) -> RootPaths:
    """Add the grid's new items to the root's queue (making the root if missing) and say how many; the root's paths.

    Everything that can refuse the grid runs before anything is written, the
    root folder included.
    """
    grid_items = load_grid(grid)
    stamp = origin()  # which fedspec's settings these are: a machine whose fedspec does not take them leaves them to others
    items = [QueueItem(i.id, i.spec.model_dump(mode="json"), added_by=stamp) for i in grid_items]
    there = RootPaths(folder_root(root))
    queued = load_queue(there) if there.queue_file.exists() else []
    same = same_spec_elsewhere(queued, items)
    known = {i.id for i in queued} | set(same)
    check_splittable(str(grid), [(i.id, i.spec) for i in grid_items if i.id not in known])
    paths = RootPaths(writable_root(root))
    added = add_items(paths, [i for i in items if i.id not in same], source=str(grid))
    line = f"queue {paths.queue_file}: {len(added)} new item(s) from {grid}, {len(items) - len(added)} already there"
    if same:
        new_id, old_id = next(iter(same.items()))
        line += f" ({len(same)} of them under another name, e.g. {new_id} as {old_id})"
    out.print(escape(line))
    return paths


def worker(
    root: Path = typer.Option(Path("."), help="The shared folder (all machines point at the same one); with --grid created if missing, its parent must exist."),
    grid: Optional[Path] = typer.Option(None, help="Grid TOML to add to the queue first (idempotent); without it, join the queue that is there."),
    name: Optional[str] = typer.Option(None, help="Worker name shown in status, one per live worker (a second worker under a name in use stops); default: stable per machine, kept outside the root."),
    device: str = typer.Option("auto", help="auto (cuda > mps > cpu), cpu, cuda or mps."),
    lease_ttl: float = typer.Option(600.0, help="Seconds without a heartbeat before peers take an item over. Keep minutes on a sync folder."),
    heartbeat: float = typer.Option(30.0, help="Seconds between heartbeats (well below --lease-ttl)."),
    settle: Optional[float] = typer.Option(None, min=0, help="Seconds to wait after claiming before trusting the claim; default 0 on local disk/SMB, 60 in a Dropbox/iCloud/Drive folder."),
    max_items: Optional[int] = typer.Option(None, min=0, help="Stop after running this many items (0: only add --grid to the queue)."),
    wait: bool = typer.Option(False, "--wait", help="Keep polling while peers hold items (taking over stale ones), and wait for a shared folder that drops; exit once every item is done or failed."),
    poll: float = typer.Option(10.0, min=0.1, help="Seconds between polls with --wait."),
    threads: int = typer.Option(0, min=0, help="CPU threads for torch (0: torch's default, one per core). With several workers on one machine give each cores / workers: more threads than cores slow each of them down several times over (the worker and status warn)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log claims, reclaims and client faults."),
) -> None:
    """Claim items from ROOT/distributed_work/work_queue.json and train them with a checkpoint every round.

    Results go to ROOT/paper_results/<item>.csv.  Stale items of crashed or
    sleeping peers are resumed from their last round.  Ctrl-C or SIGTERM
    stops after the current round (during a task's loading, before the first)
    and hands the item back at once (exit 130/143).
    Items of a task this machine cannot load (no network for the hub, no data
    folder, no text extra) are handed back for other machines, not failed.
    A disk that refuses writes (full, read-only) or a shared folder that drops
    stops the worker (exit 1) and hands its item back, not failed; with --wait
    a dropped folder is waited for instead, and its item taken up again.
    """
    setup_logging(verbose)
    if not 0 < 2 * heartbeat <= lease_ttl:  # NaN fails too
        from fedspec.errors import ConfigError

        raise ConfigError(f"--lease-ttl ({lease_ttl}) must be positive and at least twice --heartbeat ({heartbeat})")
    worker_name = None  # named (and the name held) before the grid is added: a refused worker adds nothing
    if max_items != 0:
        worker_name = default_worker_name() if name is None else hold_name(check_worker_name(name), folder_root(root))
    if grid is not None:
        paths = _add_grid(root, grid)
    else:
        paths = RootPaths(writable_root(root, create=False))  # joining a queue: never an empty root in its place
        load_queue(paths)  # a clear error if this is not a fedspec root
    if max_items == 0:  # only the grid: no heartbeat either, or status would list a worker that never ran
        return

    from fedspec.config import make_spec
    from fedspec.errors import TaskError
    from fedspec.fl.device import cpu_threads, resolve_device
    from fedspec.fl.loop import run_experiment
    from fedspec.fl.tasks import load_task

    dev = resolve_device(device)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)

    @functools.lru_cache(maxsize=1)  # a grid's items share one task: load it once, not per item (SST-2 tokenizes 67k sentences)
    def load(name: str, max_train_samples: int | None):
        console.print(f"loading task {name} …", highlight=False)
        started = time.monotonic()
        task = load_task(name, max_train_samples)
        console.print(f"  {name} loaded in {time.monotonic() - started:.1f}s", highlight=False)
        return task

    bar = RoundBar() if console.is_terminal else None

    def job(item: QueueItem, guard, progress, on_step) -> str:
        spec = make_spec(f"{paths.queue_file} item {item.id}", **item.spec)  # a hand-edited spec fails in one line

        def on_start(done: int, total: int) -> None:
            if w.stop_signal is not None:  # Ctrl-C while the task loaded (minutes for SST-2): no round begun, none to finish
                raise StopRequested
            if done:
                console.print(f"  {item.id}: resuming after round {done}/{total} from its checkpoint", highlight=False)

        try:
            return run_experiment(spec, item.id, paths.root, device=dev.type, guard=guard, on_round=progress, on_start=on_start,
                                  on_step=on_step, task=load(spec.task, spec.max_train_samples), writer=worker_name).status
        except ImportError as err:  # a package missing here (also when the model is built): a TaskError, left to other machines
            raise TaskError(f"{spec.task}: {err}" + ("" if spec.task == "digits" else " (pip install 'fedspec[text]')")) from None

    def on_settle(item_id: str, generation: int, seconds: float) -> None:
        if seconds >= SAY_SETTLE_S:  # a minute of silence on a sync folder read as a hang
            console.print(f"[bold]{escape(item_id)}[/bold]: claim written (generation {generation}); trusting it in {seconds:.0f}s, "
                          "once a peer's claim of it would have synced (--settle)", highlight=False)

    def on_claim(item: QueueItem, lease) -> None:
        console.print(f"[bold]{item.id}[/bold]: claimed (generation {lease.generation}) by {worker_name} on {dev.type}")

    def on_round(item: QueueItem, row: dict) -> None:
        if bar is not None:
            bar.ended()
        console.print(escape(round_line(item.id, item.rounds, row)), highlight=False)

    def on_item_end(item: QueueItem, outcome: str, error: str | None) -> None:
        if bar is not None:
            bar.ended()
        colour = {"done": "green", "failed": "red"}.get(outcome, "yellow")
        console.print(f"[{colour}]{item.id}: {outcome}[/{colour}]" + (f" ({escape(error)})" if error else ""), highlight=False)

    def on_idle(report) -> None:
        c = report.counts
        console.print(f"waiting: {c['running']} running elsewhere, {c['pending']} pending, {c['done']} done", highlight=False)

    settings = WorkerSettings(lease_ttl=lease_ttl, heartbeat=heartbeat,
                              settle=default_settle(paths.root) if settle is None else settle,
                              poll=poll, wait=wait, max_items=max_items)
    events = WorkerEvents(on_settle=on_settle, on_claim=on_claim, on_round=on_round, on_item_end=on_item_end, on_idle=on_idle,
                          on_step=None if bar is None else bar.step,
                          on_warning=lambda line: console.print(f"[yellow]warning:[/yellow] {escape(line)}", highlight=False))
    w = Worker(paths, worker_name, job, settings, events, info={"device": dev.type, **cpu_threads()})
    console.print(f"worker {worker_name} on {dev.type}, root {escape(str(paths.root))} (lease TTL {lease_ttl:.0f}s, settle {settings.settle:.0f}s)")
    if bar is None:
        code = w.run()
    else:
        with bar.progress:
            code = w.run()
    tally = ", ".join(f"{n} {outcome}" for outcome, n in w.outcomes.items()) or "no item run"
    for task_name in w.unavailable:
        console.print(f"[yellow]warning:[/yellow] this machine cannot load {task_name} (why: above); its items are left to "
                      "other machines", highlight=False)
    if w.other_fedspec:
        console.print(f"[yellow]warning:[/yellow] {len(w.other_fedspec)} item(s) added by another fedspec are left to the "
                      "machines that run it (why: above); update fedspec here to run them", highlight=False)
    if code == 0 and (w.unavailable or w.other_fedspec) and set(w.outcomes) <= {LEFT_TO_OTHERS}:
        code = 1  # nothing this machine can run: say so in the exit code too
    out.print(f"worker {worker_name}: {tally}" + ("" if code in (0, 1) else f"; stopped (exit {code})"))
    if code == 0 and w.final is not None:
        for line in next_steps(w.final.counts, paths.root):
            console.print(escape(line), highlight=False)
    if code:
        raise typer.Exit(code)


def next_steps(counts: dict[str, int], root: Path) -> list[str]:
    """What to do once a worker has nothing left to claim: draw the figures, follow the peers, or put failures back."""
    where = shell_path(root)
    total = sum(counts.values())
    lines = []
    if counts["failed"]:
        lines.append(f"{counts['failed']} of {total} items failed: `fedspec status --root {where}` says why, "
                     f"`fedspec retry --failed --root {where}` puts them back")
    if counts["running"]:
        lines.append(f"{counts['running']} of {total} items are still running elsewhere: `fedspec status --root {where}` "
                     "follows them (a worker started with --wait stays to take over any that stall)")
    if counts["done"] == total > 0:
        lines.append(f"the queue is done ({total} of {total} items): `fedspec plots --root {where}` draws the figures")
    return lines
