"""Write every figure and the summary tables for a root."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from fedspec.atomic import write_text
from fedspec.checkpoint_file import read_header
from fedspec.config import ExperimentSpec, spec_changes
from fedspec.errors import ConfigError, FedspecError
from fedspec.plots.data import load_results, summarize, summary_markdown
from fedspec.plots.figures import FIGURES, NothingToDraw, federated, label_distribution, style


class NoResults(FedspecError):
    """Nothing to plot yet."""


def _one_task(data, task: str | None, results: Path):
    """The rows of one task, and a note on the results of other tasks left out: one figure of two tasks means nothing.

    Raises
    ------
    ConfigError
        Several tasks and no ``task`` chosen, or ``task`` has no results.
    """
    by_task = data.drop_duplicates("item").astype({"task": str}).groupby("task", sort=True)["item"].agg(sorted)

    def listed(tasks) -> str:
        return ", ".join(f"{t}: {len(names)} ({', '.join(names[:2])}{', …' if len(names) > 2 else ''})" for t, names in tasks.items())

    if task is None:
        if len(by_task) == 1:
            return data, None
        choices = " or ".join(f"--task {t}" for t in by_task.index)
        raise ConfigError(f"{results}: results of {len(by_task)} tasks ({listed(by_task)}); one figure would mix them: pass {choices}")
    if task not in by_task.index:
        raise ConfigError(f"--task: {results} has no results of task {task!r} (it has {listed(by_task)})")
    others = by_task.drop(task)
    if others.empty:
        return data, None
    return data[data["task"].astype(str) == task], f"results of other tasks left out ({listed(others)})"


def _not_shown(states: dict[str, str], data) -> str | None:
    """One line on the queue's items that have no rounds in ``data``: a table without them is not the whole grid."""
    shown = set(data["item"])
    missing = [state for item, state in states.items() if item not in shown]
    if not missing:
        return None
    listed = ", ".join(f"{n} {state}" for state, n in Counter(missing).most_common())
    return f"{len(missing)} of {len(states)} items of the queue have no rounds yet and are not shown ({listed}; see `fedspec status`)"


def _repeated_seeds(data) -> list[str]:
    """One line per method and setting with several results of one seed: the curves and the summary average them as seeds.

    Two queue items never share a spec, but a CSV of another run (``fedspec
    run --name trial``, a copied result) lands in the same group as the
    grid's item of its method, setting and seed.
    """
    items = data.drop_duplicates("item")
    lines = []
    for (method, setting, seed), group in items.groupby(["method", "setting", "seed"], dropna=False, sort=True):
        if len(group) > 1:
            seed_text = f"{seed:g}" if isinstance(seed, float) and seed == seed else str(seed)
            lines.append(f"{method} {setting}, seed {seed_text}: {len(group)} results ({', '.join(sorted(group['item']))}) are "
                         "averaged as if of different seeds; move all but one out of paper_results")
    return lines


# What a figure's own axes and legend tell apart, and what does not change an experiment (retries of a failing client,
# clients trained together or one by one): every other setting must be the same for results to be compared.
_NOT_COMPARED = {"method", "partition", "alpha", "seed", "device", "client_retries", "parallel_clients"}


def _settings(root: Path, items, specs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each result's settings apart from ``_NOT_COMPARED``: its queue item's spec, else its checkpoint's; unknown ones left out."""
    out = {}
    for item in items:
        spec = specs.get(item)
        if spec is None:  # a `fedspec run`, or results copied in: the checkpoint header records the settings
            try:
                meta = read_header(root / "checkpoints_distributed" / item)
            except FedspecError:  # torn, foreign, not synced down: said elsewhere, or not knowable
                meta = None
            spec = meta.get("spec") if meta else None
        try:
            fields = ExperimentSpec.model_validate(spec).hashed_fields()  # an older queue's spec gets today's defaults
        except ValidationError:
            continue
        out[item] = {k: v for k, v in fields.items() if k not in _NOT_COMPARED}
    return out


def _other_settings(root: Path, data, specs: dict[str, dict[str, Any]]) -> str | None:
    """One line on the results run with other settings than most (rounds, clients, lr …): the means take them for one experiment.

    A trial ``fedspec run --seed 7 --rounds 3`` in a grid's root is not a
    repeated seed of a grid item, yet joins its method and setting as one more seed.
    """
    settings = _settings(root, data["item"].unique(), specs)
    keys = {item: json.dumps(fields, sort_keys=True) for item, fields in settings.items()}
    counts = Counter(keys.values())
    if len(counts) < 2:
        return None
    usual_key = counts.most_common(1)[0][0]
    usual = json.loads(usual_key)
    odd = sorted(item for item, key in keys.items() if key != usual_key)
    shown = ", ".join(f"{item} ({spec_changes(usual, settings[item])})" for item in odd[:2]) + (", …" if len(odd) > 2 else "")
    return (f"{len(odd)} of {len(keys)} results were run with other settings than the rest ({shown}) and are averaged "
            "with them as the same experiment; move them out of paper_results, or give each setting its own root")


def _partitions(data, specs: dict[str, dict[str, Any]]) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """Client label splits of every Dirichlet/IID setting, from the engine's own partition code."""
    from fedspec.fl.partition import partition
    from fedspec.fl.splits import train_labels

    out: dict[str, tuple[list[np.ndarray], np.ndarray]] = {}
    for _, row in federated(data).drop_duplicates("setting").sort_values(["partition", "alpha"]).iterrows():
        spec = specs.get(row["item"], {})
        try:
            labels = train_labels(str(row["task"]), spec.get("max_train_samples"))
            if labels is None:
                raise NothingToDraw(f"only digits' labels are read without torch, not {row['task']}'s")
            clients = int(spec.get("clients", row.get("clients_ok", 10) + row.get("clients_failed", 0)))
            alpha = float(row["alpha"]) if row["partition"] == "dirichlet" else 1.0
            parts = partition(labels, str(row["partition"]), clients, alpha, int(row["seed"]), int(spec.get("min_client_size", 10)))
        except FedspecError as err:  # no scikit-learn, a split the CSV's client count cannot make
            raise NothingToDraw(str(err)) from None
        out[row["setting"]] = (parts, labels)
    return out


def make_plots(root: Path, out: Path, formats: list[str], specs: dict[str, dict[str, Any]] | None = None,
               states: dict[str, str] | None = None, task: str | None = None) -> tuple[list[Path], list[str]]:
    """Render everything; returns (files written, notes about skipped inputs).

    Parameters
    ----------
    specs
        Each queue item's spec, for the clients and sizes of its label split
        (without it, the split is redrawn from the CSV's client counts).
    states
        Each queue item's state (pending, running, done, failed): items with
        no rounds yet are counted in a note and under summary.md.
    task
        The task to draw; needed only where the results are of several.
    """
    data, notes = load_results(root)
    if data.empty:
        skipped = f" ({notes[0]}{f' and {len(notes) - 1} more' if len(notes) > 1 else ''})" if notes else ""
        raise NoResults(f"{root / 'paper_results'}: no results yet{skipped} (run `fedspec worker` first)")
    data, other_tasks = _one_task(data, task, root / "paper_results")
    shown_task = str(data["task"].iloc[0])
    specs = specs or {}
    states = {item: state for item, state in (states or {}).items() if specs.get(item, {}).get("task", shown_task) == shown_task}
    missing = _not_shown(states, data)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    figures = {**FIGURES, "label_distribution": lambda data, *paths: label_distribution(_partitions(data, specs), *paths)}
    not_drawn: dict[str, list[str]] = {}  # why -> figures
    stale: list[str] = []
    with style():
        for name, draw in figures.items():
            paths = [out / f"{name}.{fmt}" for fmt in formats]
            try:
                draw(data, *paths)  # drawn once, saved in each format
                written += paths
            except NothingToDraw as why:
                not_drawn.setdefault(str(why), []).append(name)
                # An earlier run's file (another --task, results since moved away) would read as this run's figure.
                stale += [path.name for path in paths if path.exists()]
                for path in paths:
                    path.unlink(missing_ok=True)
    notes += [f"{', '.join(names)} not drawn: {why}" for why, names in not_drawn.items()]
    if stale:
        notes.append(f"removed from {out} the earlier {', '.join(stale)}, of results no longer drawn")
    summary = summarize(data)
    below = [line for line in (other_tasks, _other_settings(root, data, specs), missing, *_repeated_seeds(data)) if line]
    write_text(out / "summary.csv", summary.to_csv(index=False))
    write_text(out / "summary.md", summary_markdown(summary) + "".join(f"\n{line}.\n" for line in below))
    notes += below
    written += [out / "summary.csv", out / "summary.md"]
    return written, notes
