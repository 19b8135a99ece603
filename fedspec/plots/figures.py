"""The paper's figures: one consistent style, Okabe-Ito colours, column-sized."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# Okabe & Ito (2008): distinguishable with every common colour-vision deficiency.
OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
METHOD_STYLE = {
    "fedavg": {"color": "#0072B2", "label": "FedAvg", "marker": "o"},
    "fedspec": {"color": "#D55E00", "label": "FedSpec", "marker": "s"},
    "centralized": {"color": "#000000", "label": "Centralized", "marker": None},
}
COLUMN_IN = 3.4  # one column of a two-column paper
RC = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
      "ytick.labelsize": 7, "lines.linewidth": 1.3, "lines.markersize": 3, "axes.grid": True, "grid.alpha": 0.3,
      "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO), "savefig.dpi": 200, "savefig.bbox": "tight"}


class NothingToDraw(Exception):
    """The results hold nothing a figure shows (no FedSpec item for the rank figure): it is not written, and a note says why."""


def federated(data: pd.DataFrame) -> pd.DataFrame:
    """The FedAvg and FedSpec rows; a figure of federated rounds has nothing to draw without them."""
    fed = data[data["method"] != "centralized"]
    if fed.empty:
        raise NothingToDraw("no FedAvg or FedSpec results, only centralized ones")
    return fed


def _settings(data: pd.DataFrame) -> list[str]:
    return federated(data).drop_duplicates("setting").sort_values(["partition", "alpha"])["setting"].tolist()


def _final_accuracy(df: pd.DataFrame) -> pd.Series:
    """Each item's test accuracy at its last round."""
    return df.sort_values("round").groupby("item")["test_accuracy"].last()


def _panels(n: int, height: float = 2.2):
    fig, axes = plt.subplots(1, n, figsize=(min(2 * COLUMN_IN, COLUMN_IN * max(1, n) * 0.62 + 0.6), height),
                             sharey=True, squeeze=False)
    return fig, axes[0]


def _save(fig, paths: tuple[Path, ...]) -> None:
    """One drawing written in every requested format."""
    for path in paths:
        fig.savefig(path)
    plt.close(fig)


def _round_axis(ax) -> None:
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no round 1.5 on a short run's axis


def _mean_curve(df: pd.DataFrame, col: str) -> pd.DataFrame:
    return df.groupby("round")[col].agg(["mean", "std", "count"]).reset_index()


def _plot_methods(ax, df: pd.DataFrame, col: str, methods=("fedavg", "fedspec")) -> None:
    for m in methods:
        sub = df[df["method"] == m]
        if sub.empty:
            continue
        style = METHOD_STYLE[m]
        curve = _mean_curve(sub, col)
        partial = bool(sub["partial"].any())
        ax.plot(curve["round"], curve["mean"], color=style["color"], marker=style["marker"], markevery=max(1, len(curve) // 8),
                linestyle="--" if partial else "-", label=style["label"] + (" (partial)" if partial else ""))
        if (curve["count"] > 1).any():
            ax.fill_between(curve["round"], curve["mean"] - curve["std"].fillna(0), curve["mean"] + curve["std"].fillna(0),
                            color=style["color"], alpha=0.2, linewidth=0)


def _per_setting(data: pd.DataFrame, col: str, ylabel: str, paths: tuple[Path, ...], legend_loc: str, log: bool = False,
                 reference: Callable | None = None) -> None:
    """One panel per partition setting, FedAvg vs FedSpec curves of ``col`` over rounds."""
    fig, axes = _panels(len(_settings(data)))
    for ax, setting in zip(axes, _settings(data)):
        _plot_methods(ax, data[data["setting"] == setting], col)
        if reference is not None:
            reference(ax)
        if log:
            ax.set_yscale("log")
        ax.set_title(setting)
        _round_axis(ax)
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(loc=legend_loc)
    _save(fig, paths)


def accuracy_vs_round(data: pd.DataFrame, *paths: Path) -> None:
    central = data[data["method"] == "centralized"]

    def centralized_line(ax) -> None:
        if not central.empty:
            ax.axhline(_final_accuracy(central).mean(), color="black", linestyle=":", linewidth=1, label="Centralized (final)")

    _per_setting(data, "test_accuracy", "test accuracy", paths, "lower right", reference=centralized_line)


def gap_vs_round(data: pd.DataFrame, *paths: Path) -> None:
    _per_setting(data, "frobenius_gap", r"$\|\sum_i w_i B_i A_i - BA\|_F$", paths, "upper right", log=True)


def rank_vs_round(data: pd.DataFrame, *paths: Path) -> None:
    spec = data[data["method"] == "fedspec"]
    if spec.empty:
        raise NothingToDraw("no FedSpec results (only FedSpec adapts its rank)")
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.2))
    styles = ["-", "--", ":", "-."]
    for k, (color, setting) in enumerate(zip(OKABE_ITO, _settings(spec))):
        curve = _mean_curve(spec[spec["setting"] == setting], "rank")
        # Equal ranks overlap: dashes and a small offset keep every setting visible.
        ax.step(curve["round"], curve["mean"] + 0.06 * (k - 1), where="post", color=color, label=setting,
                linestyle=styles[k % len(styles)])
    _round_axis(ax)
    ax.set_ylabel("FedSpec rank r")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="lower right")
    _save(fig, paths)


def final_accuracy_vs_alpha(data: pd.DataFrame, *paths: Path) -> None:
    """Final accuracy over Dirichlet α per method, with IID and centralized results as horizontal references."""
    dirichlet = data[data["partition"] == "dirichlet"]
    if dirichlet.empty:
        raise NothingToDraw("no Dirichlet results (IID and centralized ones are only its reference lines)")
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.2))
    final = dirichlet.sort_values("round").groupby("item").agg(method=("method", "first"), alpha=("alpha", "first"),
                                                                acc=("test_accuracy", "last"))
    for m in ("fedavg", "fedspec"):
        style = METHOD_STYLE[m]
        sub = final[final["method"] == m].groupby("alpha")["acc"].agg(["mean", "std"]).reset_index()
        if not sub.empty:
            ax.errorbar(sub["alpha"], sub["mean"], yerr=sub["std"].fillna(0), color=style["color"], marker=style["marker"],
                        capsize=2, label=style["label"])
        iid = data[(data["method"] == m) & (data["partition"] == "iid")]
        if not iid.empty:
            ax.axhline(_final_accuracy(iid).mean(), color=style["color"], linestyle="--", linewidth=1, label=f"{style['label']}, IID")
    central = data[data["method"] == "centralized"]
    if not central.empty:
        ax.axhline(_final_accuracy(central).mean(), color="black", linestyle=":", linewidth=1, label="Centralized")
    ax.set_xscale("log")
    alphas = sorted(final["alpha"].unique())
    ax.set_xticks(alphas, labels=[f"{a:g}" for a in alphas])  # the grid's own α, not powers of ten
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(r"Dirichlet $\alpha$ (log scale; smaller = more non-IID)")
    ax.set_ylabel("final test accuracy")
    ax.legend(loc="best")
    _save(fig, paths)


def communication_vs_accuracy(data: pd.DataFrame, *paths: Path) -> None:
    settings = _settings(data)
    fig, axes = _panels(len(settings))
    for ax, setting in zip(axes, settings):
        for m in ("fedavg", "fedspec"):
            sub = data[(data["setting"] == setting) & (data["method"] == m)].sort_values("round")
            for k, (_, item) in enumerate(sub.groupby("item")):
                mb = (item["uplink_bytes"] + item["downlink_bytes"]).cumsum() / 1e6
                style = METHOD_STYLE[m]
                ax.plot(mb, item["test_accuracy"], color=style["color"], marker=style["marker"],
                        markevery=max(1, len(item) // 8), label=style["label"] if k == 0 else None)
        ax.set_title(setting)
        ax.set_xlabel("cumulative communication (MB)")
    axes[0].set_ylabel("test accuracy")
    axes[-1].legend(loc="lower right")
    _save(fig, paths)


def label_distribution(parts_by_setting: dict[str, tuple[list[np.ndarray], np.ndarray]], *paths: Path) -> None:
    """Stacked bars: samples of each class held by each client, one panel per setting."""
    fig, axes = _panels(len(parts_by_setting), height=2.4)
    for ax, (setting, (parts, labels)) in zip(axes, parts_by_setting.items()):
        classes = np.unique(labels)
        counts = np.array([[np.sum(labels[p] == c) for c in classes] for p in parts])
        bottom = np.zeros(len(parts))
        cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
        for j, c in enumerate(classes):
            ax.bar(np.arange(len(parts)), counts[:, j], bottom=bottom, color=cmap(j % cmap.N), width=0.8, label=str(c))
            bottom += counts[:, j]
        ax.set_title(setting)
        ax.set_xlabel("client")
        ax.set_xticks(np.arange(len(parts)))
    axes[0].set_ylabel("training samples")
    axes[-1].legend(title="label", loc="center left", bbox_to_anchor=(1.0, 0.5), ncol=1)
    _save(fig, paths)


FIGURES: dict[str, Callable[..., None]] = {  # (data, *paths): one drawing, saved to each path
    "accuracy_vs_round": accuracy_vs_round,
    "gap_vs_round": gap_vs_round,
    "rank_vs_round": rank_vs_round,
    "final_accuracy_vs_alpha": final_accuracy_vs_alpha,
    "communication_vs_accuracy": communication_vs_accuracy,
}


def style():
    return matplotlib.rc_context(RC)
