"""``fedspec status``: what is pending, running where, done, failed; ETA.  Reads files only, no torch."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fedspec.cli.common import folder_root, out
from fedspec.errors import FedspecError, describe_os_error
from fedspec.queue.status import StatusReport, WorkerStatus, collect
from fedspec.queue.store import RootPaths

STATE_STYLE = {"pending": "white", "running": "cyan", "done": "green", "failed": "red"}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _round_cell(w: WorkerStatus) -> str:
    if w.round is None and w.round_progress is None:
        return "-"
    return f"{w.round or 0}" + ("" if w.round_progress is None else f"+{100 * w.round_progress:.0f}%")


def _pace(w: WorkerStatus) -> str:
    if w.sec_per_round is not None:
        return f"{w.sec_per_round:.2f}"
    return "-" if w.sec_per_round_estimate is None else f"~{w.sec_per_round_estimate:.2f}"  # from the round in flight


def render(report: StatusReport, width: int = 80) -> Group:
    """The status view for a console ``width`` columns wide (names wrap at 14 columns below 160)."""
    c = report.counts
    total = sum(c.values())
    if not (c["pending"] or c["running"]):  # "ETA 0s" read as nearly done, failed items and all
        eta = "nothing left to run" + (": `fedspec retry --failed` puts the failed back" if c["failed"] else "")
    elif report.eta_seconds is not None:
        eta = "ETA " + _age(report.eta_seconds)
    elif report.live_workers == 0:
        eta = "ETA - (no worker running: start `fedspec worker`)"
    elif report.able_workers == 0:
        eta = "ETA - (no live worker can load what is left: see the warnings)"
    else:
        eta = "ETA unknown"
    head = (f"[bold]{total} item{'' if total == 1 else 's'}[/bold]: {c['pending']} pending, [cyan]{c['running']} running[/cyan], "
            f"[green]{c['done']} done[/green], [red]{c['failed']} failed[/red]   {eta}")
    # Fits an 80-column terminal: long item ids and worker names wrap rather than lose their ends to
    # an ellipsis ("fedspec_dirichlet_alpha0…" hid which alpha it was), headers are short, and the
    # (long) last errors are listed under the table instead of squeezing every column.  A wide
    # console (a log, a pipe) keeps every name on one line.
    name_width = 14 if width < 160 else None
    items = Table(show_edge=False, header_style="bold", caption_justify="left",
                  caption="seen: since the holder's last heartbeat; fails: failed attempts since the last retry")
    items.add_column("item", overflow="fold")
    items.add_column("state", overflow="fold", min_width=7, max_width=9)  # "running (stale)" wraps after "running"
    items.add_column("round", no_wrap=True, min_width=5)
    items.add_column("holder", overflow="fold", max_width=name_width)
    for col in ("seen", "acc", "fails"):  # not "tries": a done item read "tries 0"
        items.add_column(col, no_wrap=True, min_width=len(col))
    errors = []
    for i in report.items:
        style = STATE_STYLE[i.state]
        items.add_row(
            i.id, f"[{style}]{i.state}[/{style}]" + (" (stale)" if i.stale else ""), f"{i.round}/{i.rounds}",
            # A pending item's last holder handed it back (or failed): showing it would read as still held.
            (i.holder if i.state != "pending" else None) or "-", _age(i.heartbeat_age) if i.state == "running" else "-",
            "-" if i.accuracy is None else f"{i.accuracy:.4f}", str(i.attempts),
        )
        if i.error:
            errors.append(f"[{style}]{i.id}[/{style}]: last error: {escape(i.error[:300])}")
    parts: list = [head, items, *errors]
    if report.workers:
        workers = Table(show_edge=False, header_style="bold", caption="round: rounds committed (+ share of the next one trained)",
                        caption_justify="left")
        for col in ("worker", "host"):
            workers.add_column(col, overflow="fold", max_width=name_width)
        workers.add_column("device", no_wrap=True, min_width=6)
        workers.add_column("state", overflow="fold", min_width=7, max_width=9)  # "running (silent)" wraps after "running"
        workers.add_column("item", overflow="fold")
        for col in ("round", "s/round", "seen"):
            workers.add_column(col, no_wrap=True, min_width=len(col))
        for w in report.workers:
            silent = w.state in ("idle", "running") and not w.live  # killed, asleep or cut off: its beat says otherwise
            workers.add_row(w.name, w.host or "-", w.device or "-", (w.state or "-") + (" (silent)" if silent else ""), w.item or "-",
                            _round_cell(w),
                            _pace(w), _age(w.heartbeat_age))
        parts.append(workers)
    for line in report.warnings:
        parts.append(f"[yellow]warning:[/yellow] {escape(line)}")
    return Group(*parts)


def status(
    root: Path = typer.Option(Path("."), help="The shared folder."),
    watch: float = typer.Option(0.0, min=0, help="Refresh every this many seconds (Ctrl-C to quit); 0 prints once. Into a pipe or a log, a dated report each time."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (counts, items, workers, warnings, eta_seconds, live_workers, able_workers: the live ones the ETA counts)."),
) -> None:
    """Show the queue: counts, each item's state/holder/round/accuracy/attempts/error, workers, ETA, warnings.

    The ETA counts the workers that are live (working or waiting, heartbeat
    within their lease TTL), each at its own seconds per round; a worker whose
    heartbeat went silent is shown as such and not counted, nor one that
    cannot load the task of any item left.
    """
    paths = RootPaths(folder_root(root))
    report = collect(paths)  # a wrong root is an error at once, watching or not
    if as_json:
        print(json.dumps(report.to_json(), indent=1))
        return
    if watch <= 0:
        out.print(render(report, out.width))
        return
    # A terminal redraws one view in place; a pipe or a log (`--watch 600 >> status.log`) gets a dated
    # report each time (a live view there printed once, at Ctrl-C).
    shown = last = render(report, out.width)
    live = Live(shown, console=out, refresh_per_second=4, screen=False) if out.is_terminal else None
    with live or contextlib.nullcontext():
        try:
            while True:
                if live is None:
                    out.print(f"— {time.strftime('%Y-%m-%d %H:%M:%S')} —")
                    out.print(shown)
                    out.file.flush()
                time.sleep(watch)
                try:
                    shown = last = render(collect(paths), out.width)
                except (OSError, FedspecError) as err:  # a share that drops mid-watch: said, and watched on
                    note = Text(f"{time.strftime('%H:%M:%S')} cannot read the folder: {_unreadable(paths, err)}; "
                                f"trying again every {watch:g}s (Ctrl-C to quit)", style="yellow")
                    shown = note if live is None else Group(last, note)  # a log has the last report above already
                if live is not None:
                    live.update(shown)
        except KeyboardInterrupt:
            pass


def _unreadable(paths: RootPaths, err: Exception) -> str:
    if not paths.root.is_dir():  # unmounted: not "not a fedspec root", whose advice is to create a queue
        return f"{paths.root} is gone (unmounted or disconnected?)"
    return describe_os_error(err) if isinstance(err, OSError) else str(err)
