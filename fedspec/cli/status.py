"""``fedspec status``: what is pending, running where, done, failed; ETA.  Reads files only, no torch."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from fedspec.cli.common import out
from fedspec.queue.status import StatusReport, collect
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


def render(report: StatusReport) -> Group:
    c = report.counts
    total = sum(c.values())
    eta = "unknown" if report.eta_seconds is None else _age(report.eta_seconds)
    head = (f"[bold]{total} items[/bold]: {c['pending']} pending, [cyan]{c['running']} running[/cyan], "
            f"[green]{c['done']} done[/green], [red]{c['failed']} failed[/red]   ETA {eta}")
    items = Table(show_edge=False, header_style="bold")
    items.add_column("item", no_wrap=True)
    for col in ("state", "round", "holder", "heartbeat", "accuracy", "attempts"):
        items.add_column(col, no_wrap=True)
    items.add_column("last error", overflow="fold")
    for i in report.items:
        style = STATE_STYLE[i.state]
        items.add_row(
            i.id, f"[{style}]{i.state}[/{style}]" + (" (stale)" if i.stale else ""), f"{i.round}/{i.rounds}",
            i.holder or "-", _age(i.heartbeat_age) if i.state == "running" else "-",
            "-" if i.accuracy is None else f"{i.accuracy:.4f}", str(i.attempts), (i.error or "")[:120],
        )
    parts: list = [head, items]
    if report.workers:
        workers = Table(show_edge=False, header_style="bold")
        for col in ("worker", "host", "device", "state", "item", "round", "s/round", "heartbeat"):
            workers.add_column(col)
        for w in report.workers:
            workers.add_row(w.name, w.host or "-", w.device or "-", w.state or "-", w.item or "-",
                            "-" if w.round is None else str(w.round),
                            "-" if w.sec_per_round is None else f"{w.sec_per_round:.2f}", _age(w.heartbeat_age))
        parts.append(workers)
    for line in report.warnings:
        parts.append(f"[yellow]warning:[/yellow] {line}")
    return Group(*parts)


def status(
    root: Path = typer.Option(Path("."), help="The shared folder."),
    watch: float = typer.Option(0.0, min=0, help="Refresh every this many seconds (Ctrl-C to quit); 0 prints once."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (counts, items, workers, warnings, eta_seconds)."),
) -> None:
    """Show the queue: counts, each item's state/holder/round/accuracy/attempts/error, workers, ETA, warnings."""
    paths = RootPaths(Path(root).expanduser())
    report = collect(paths)
    if as_json:
        print(json.dumps(report.to_json(), indent=1))
        return
    if watch <= 0:
        out.print(render(report))
        return
    with Live(render(report), console=out, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(watch)
                live.update(render(collect(paths)))
        except KeyboardInterrupt:
            pass
