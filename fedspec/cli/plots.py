"""``fedspec plots``: merge the results CSVs into the paper's figures and tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.markup import escape

from fedspec.cli.common import console, folder_root, out
from fedspec.errors import ConfigError, FedspecError, RootError, no_such_root
from fedspec.queue.status import classify
from fedspec.queue.store import PLOTS, RootPaths
from fedspec.queue.workqueue import load_queue

ALLOWED = ("png", "pdf", "svg")


def plots(
    root: Path = typer.Option(Path("."), help="The shared folder whose paper_results/ to read."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Where to write (default ROOT/plots)."),
    formats: List[str] = typer.Option(["png"], "--format", help="png, pdf or svg; repeat or comma-separate for several."),
    task: Optional[str] = typer.Option(None, help="Draw only this task's results; needed where paper_results/ holds several tasks' (a trial `fedspec run --task …` among a grid's)."),
) -> None:
    """Write accuracy/gap/rank curves, accuracy vs alpha, communication vs accuracy, label splits, summary.csv/.md.

    Items still running are included from their checkpoints and marked (partial);
    items of the queue with no rounds yet (pending, or failed before one) are
    counted in a note and under summary.md, so a table drawn mid-grid does not
    read as the whole grid; so are several results of one method, setting and
    seed (a trial run's CSV beside the grid's), which the means average as if
    they were different seeds, and results run with other settings than the
    rest (rounds, clients, lr …), which they average as the same experiment.
    Results of several tasks are never drawn together: --task picks one.
    A figure with nothing to draw (rank without FedSpec results, accuracy vs
    alpha without Dirichlet ones) is not written, and a note says why; IID and
    centralized results are reference lines in the accuracy-vs-alpha figure.
    """
    fmts = list(dict.fromkeys(f.lower() for spec in formats for f in spec.replace(",", " ").split()))  # in order, once each
    bad = [f for f in fmts if f not in ALLOWED]
    if bad or not fmts:
        raise ConfigError(f"--format: {', '.join(bad) or '(none)'} not allowed; use {', '.join(ALLOWED)}")
    root = folder_root(root)
    if not root.is_dir():
        raise no_such_root(root)
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out: {out_dir} is a file, not a folder")
    from fedspec.plots.make import make_plots

    specs, states, notes = _queue(root)
    written, more = make_plots(root, out_dir or root / PLOTS, fmts, specs, states, task)
    for note in notes + more:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    for path in written:
        out.print(escape(str(path)))


def _queue(root: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str], list[str]]:
    """Each queue item's spec and state, for the label splits and the items not drawn yet; none without a queue.

    A root without a queue (results copied elsewhere) plots all the same; an
    unreadable queue is said in a note.
    """
    paths = RootPaths(root)
    try:
        items = load_queue(paths)
        report = classify(paths, items, with_progress=False, scan_placeholders=False)  # only the states are used
    except RootError:
        return {}, {}, []
    except (FedspecError, OSError) as err:
        return {}, {}, [f"queue not read ({err}): items with no rounds yet are not listed, label splits use default settings"]
    return {i.id: i.spec for i in items}, {s.id: s.state for s in report.items}, []
