"""Merge every item's rows: finished CSVs, plus the rows so far of items still running."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from fedspec.checkpoint_file import NAME as CHECKPOINT
from fedspec.checkpoint_file import read_header
from fedspec.errors import CheckpointError
from fedspec.results import COLUMNS

# The columns the figures and tables read: a CSV without one of them is not drawn (a KeyError deep in pandas otherwise).
PLOTTED = ("round", "task", "method", "partition", "alpha", "seed", "test_accuracy", "frobenius_gap", "rank",
           "uplink_bytes", "downlink_bytes")
# Sync clients' duplicates ("x (Host's conflicted copy ...).csv", "x 2.csv") are not results.
_CONFLICT = re.compile(r"( \(.*\)| \d+)$")


def load_results(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """All rows with an ``item`` and a ``partial`` column, and a list of skipped files with the reason."""
    frames, skipped = [], []
    results = root / "paper_results"
    done = set()
    for path in sorted(results.glob("*.csv")) if results.exists() else []:
        if path.name.startswith(".") or _CONFLICT.search(path.stem):
            skipped.append(f"{path.name}: sync-client copy, ignored")
            continue
        try:
            df = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            skipped.append(f"{path.name}: unreadable ({type(err).__name__})")
            continue
        missing = [c for c in PLOTTED if c not in df.columns]
        if missing:
            skipped.append(f"{path.name}: not a fedspec results file (no {', '.join(missing)})")
            continue
        df["item"], df["partial"] = path.stem, False
        frames.append(df)
        done.add(path.stem)
    ckpts = root / "checkpoints_distributed"
    for folder in sorted(p.parent for p in ckpts.glob(f"*/{CHECKPOINT}")) if ckpts.exists() else []:
        item = folder.name
        if item in done:
            continue
        try:
            meta = read_header(folder)  # None when it vanished since the glob (the item just finished)
        except CheckpointError:
            skipped.append(f"{item}: checkpoint unreadable, partial rows skipped")
            continue
        if meta and meta["rows"]:
            df = pd.DataFrame(meta["rows"], columns=COLUMNS)
            df["item"], df["partial"] = item, True
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=[*COLUMNS, "item", "partial"]), skipped
    data = pd.concat(frames, ignore_index=True)
    data["alpha"] = pd.to_numeric(data["alpha"], errors="coerce")
    for col in ("round", "test_accuracy", "frobenius_gap", "rank", "uplink_bytes", "downlink_bytes", "seed"):
        data[col] = pd.to_numeric(data[col], errors="coerce")
    data["setting"] = data.apply(_setting, axis=1)
    return data, skipped


def _setting(row: pd.Series) -> str:
    if row["partition"] == "dirichlet":
        return f"α = {row['alpha']:g}"
    return "IID" if row["partition"] == "iid" else "pooled"


def summarize(data: pd.DataFrame) -> pd.DataFrame:
    """Per method × partition × alpha: rounds done, final/best accuracy (mean ± std over seeds; no std for one seed), mean gap, Δ vs FedAvg."""
    per_item = data.sort_values("round").groupby("item").agg(
        method=("method", "first"), partition=("partition", "first"), alpha=("alpha", "first"), seed=("seed", "first"),
        rounds_done=("round", "max"), final_accuracy=("test_accuracy", "last"), best_accuracy=("test_accuracy", "max"),
        mean_gap=("frobenius_gap", "mean"), partial=("partial", "any"),
    )
    keys = ["method", "partition", "alpha"]
    summary = per_item.groupby(keys, dropna=False).agg(
        seeds=("seed", "nunique"), rounds_done=("rounds_done", "min"),
        final_acc_mean=("final_accuracy", "mean"), final_acc_std=("final_accuracy", "std"),
        best_acc_mean=("best_accuracy", "mean"), best_acc_std=("best_accuracy", "std"),
        mean_gap=("mean_gap", "mean"), partial=("partial", "any"),
    ).reset_index()
    # One seed has no spread: the std stays empty rather than reading as 0 (no variation seen) in a paper's table.
    fedavg = summary[summary["method"] == "fedavg"].set_index(["partition", "alpha"])["final_acc_mean"]
    delta = []
    for _, row in summary.iterrows():
        key = (row["partition"], row["alpha"])
        ok = row["method"] == "fedspec" and key in fedavg.index
        delta.append(100.0 * (row["final_acc_mean"] - fedavg.loc[key]) if ok else float("nan"))
    summary["fedspec_minus_fedavg_points"] = delta
    return summary


def summary_markdown(summary: pd.DataFrame) -> str:
    lines = [
        "| method | partition | alpha | seeds | rounds | final acc | best acc | mean gap | FedSpec − FedAvg (pts) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in summary.iterrows():
        alpha = "" if pd.isna(r["alpha"]) else f"{r['alpha']:g}"
        delta = "" if pd.isna(r["fedspec_minus_fedavg_points"]) else f"{r['fedspec_minus_fedavg_points']:+.2f}"
        partial = " (partial)" if r["partial"] else ""
        lines.append(
            f"| {r['method']}{partial} | {r['partition']} | {alpha} | {r['seeds']} | {r['rounds_done']} | "
            f"{_mean_std(r['final_acc_mean'], r['final_acc_std'])} | {_mean_std(r['best_acc_mean'], r['best_acc_std'])} | "
            f"{r['mean_gap']:.4g} | {delta} |"
        )
    return "\n".join(lines) + "\n"


def _mean_std(mean: float, std: float) -> str:
    """``mean ± std``, or the mean alone where one seed gives no std."""
    return f"{mean:.4f}" if pd.isna(std) else f"{mean:.4f} ± {std:.4f}"
