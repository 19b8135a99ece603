"""`fedspec plots` from small CSV fixtures, rendered with Agg."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedspec.fl.checkpoint import Checkpoint, save_checkpoint
from fedspec.plots.data import load_results, summarize
from fedspec.results import to_csv_text
from tests.conftest import fedspec_cmd


def rows(method: str, alpha: float | None, seed: int, accs: list[float], partition: str = "dirichlet") -> list[dict]:
    return [
        {"round": r + 1, "task": "digits", "method": method, "partition": partition, "alpha": alpha, "seed": seed,
         "test_accuracy": a, "test_loss": 1.0, "train_loss": 1.0, "frobenius_gap": 0.1 / (r + 1), "rank": 4 + r,
         "tail_energy": 0.01, "uplink_bytes": 1000, "downlink_bytes": 1000, "clients_ok": 5, "clients_failed": 0,
         "round_seconds": 0.1, "device": "cpu"}
        for r, a in enumerate(accs)
    ]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    res = tmp_path / "paper_results"
    res.mkdir()
    files = {
        "fedavg_dirichlet_alpha0.5_seed1": rows("fedavg", 0.5, 1, [0.5, 0.6, 0.70]),
        "fedavg_dirichlet_alpha0.5_seed2": rows("fedavg", 0.5, 2, [0.5, 0.6, 0.80]),
        "fedspec_dirichlet_alpha0.5_seed1": rows("fedspec", 0.5, 1, [0.5, 0.7, 0.80]),
        "fedspec_dirichlet_alpha0.5_seed2": rows("fedspec", 0.5, 2, [0.5, 0.9, 0.90]),
        "centralized_seed1": rows("centralized", None, 1, [0.9, 0.95, 0.97], partition="pooled"),
    }
    for name, rs in files.items():
        (res / f"{name}.csv").write_text(to_csv_text(rs))
    (res / "fedspec_dirichlet_alpha0.5_seed1 (Mac's conflicted copy 2026-01-02).csv").write_text(to_csv_text(rows("fedspec", 0.5, 1, [0.0])))
    ck = tmp_path / "checkpoints_distributed" / "fedspec_dirichlet_alpha0.1_seed1"
    save_checkpoint(ck, ck.name, "h", Checkpoint(round=2, state={}, aggregator={}, batch_size=16, rows=rows("fedspec", 0.1, 1, [0.3, 0.4])))
    queue = {"format": 1, "items": [{"id": k, "spec": {"task": "digits", "clients": 5, "min_client_size": 10}} for k in files]}
    (tmp_path / "distributed_work").mkdir()
    (tmp_path / "distributed_work" / "work_queue.json").write_text(json.dumps(queue))
    return tmp_path


def test_results_merge_marks_partial_items_and_ignores_sync_copies(root: Path) -> None:
    data, skipped = load_results(root)
    assert set(data["item"]) == {"fedavg_dirichlet_alpha0.5_seed1", "fedavg_dirichlet_alpha0.5_seed2",
                                 "fedspec_dirichlet_alpha0.5_seed1", "fedspec_dirichlet_alpha0.5_seed2",
                                 "centralized_seed1", "fedspec_dirichlet_alpha0.1_seed1"}
    assert data[data["item"] == "fedspec_dirichlet_alpha0.1_seed1"]["partial"].all()
    assert any("conflicted copy" in s for s in skipped)


def test_summary_values_mean_std_and_difference(root: Path) -> None:
    data, _ = load_results(root)
    s = summarize(data).set_index(["method", "alpha"])
    avg, spec = s.loc[("fedavg", 0.5)], s.loc[("fedspec", 0.5)]
    assert avg["final_acc_mean"] == pytest.approx(0.75) and avg["final_acc_std"] == pytest.approx(0.0707107, rel=1e-4)
    assert spec["best_acc_mean"] == pytest.approx(0.85) and spec["seeds"] == 2 and spec["rounds_done"] == 3
    assert spec["fedspec_minus_fedavg_points"] == pytest.approx(10.0)
    assert s.loc[("fedspec", 0.1)]["partial"]
    assert s.loc[("centralized", None)]["final_acc_std"] != s.loc[("centralized", None)]["final_acc_std"]  # one seed: NaN, not 0


def test_plots_command_writes_every_figure_and_table(root: Path) -> None:
    res = subprocess.run(fedspec_cmd("plots", "--root", str(root), "--format", "png,pdf", "--format", "PNG"), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == len(set(res.stdout.splitlines())) == 6 * 2 + 2  # each file once
    out = root / "plots"
    for name in ("accuracy_vs_round", "gap_vs_round", "rank_vs_round", "final_accuracy_vs_alpha",
                 "communication_vs_accuracy", "label_distribution"):
        for ext in ("png", "pdf"):
            f = out / f"{name}.{ext}"
            assert f.exists() and f.stat().st_size > 5000, f
            assert str(f) in res.stdout
    md = (out / "summary.md").read_text()
    assert "+10.00" in md and "(partial)" in md
    assert "| 0.7500 ± 0.0707 |" in md and "| 0.9700 | 0.9700 |" in md  # two seeds: mean ± std; one seed: no std to show
    assert pd.read_csv(out / "summary.csv").shape[0] == 4


def test_queue_items_with_no_rounds_are_named_as_missing_not_silently_left_out(root: Path) -> None:
    """A table drawn mid-grid, or with an item failed before its first round, must not read as the whole grid."""
    queue_file = root / "distributed_work" / "work_queue.json"
    queue = json.loads(queue_file.read_text())
    spec = {"task": "digits", "clients": 5, "min_client_size": 10, "rounds": 3}
    queue["items"] += [{"id": "fedavg_dirichlet_alpha0.1_seed1", "spec": spec},
                       {"id": "fedavg_dirichlet_alpha1.0_seed1", "spec": spec},
                       {"id": "fedspec_dirichlet_alpha1.0_seed1", "spec": spec, "max_attempts": 0}]  # attempts used up: failed
    queue_file.write_text(json.dumps(queue))
    res = subprocess.run(fedspec_cmd("plots", "--root", str(root)), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    line = "3 of 8 items of the queue have no rounds yet and are not shown (2 pending, 1 failed; see `fedspec status`)"
    assert line in " ".join(res.stderr.split())
    assert (root / "plots" / "summary.md").read_text().endswith(f"\n{line}.\n")

    queue["items"] = queue["items"][:5]  # every item has rows: nothing to say
    queue_file.write_text(json.dumps(queue))
    res = subprocess.run(fedspec_cmd("plots", "--root", str(root)), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "not shown" not in res.stderr, res.stderr
    assert "not shown" not in (root / "plots" / "summary.md").read_text()

    queue_file.write_text("{torn")  # a torn queue: the figures still come, with a note why the list is missing
    res = subprocess.run(fedspec_cmd("plots", "--root", str(root)), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "queue not read" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_plots_import_no_torch(root: Path) -> None:
    code = ("import sys; from fedspec.plots.make import make_plots; from pathlib import Path; "
            f"make_plots(Path({str(root)!r}), Path({str(root / 'p')!r}), ['png']); print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr


def test_plots_reads_files_only_the_cli_brings_the_queue(root: Path) -> None:
    """plots/ imports neither torch nor queue/ (STYLE.md): the command passes the queue's specs and states in."""
    code = ("import sys; from fedspec.plots.make import make_plots; from pathlib import Path; "
            f"make_plots(Path({str(root)!r}), Path({str(root / 'p')!r}), ['png'], states={{'x': 'pending'}}); "
            "print(sorted(m for m in sys.modules if m.startswith('fedspec.queue')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr
    assert (root / "p" / "summary.md").read_text().endswith("1 of 1 items of the queue have no rounds yet and are not shown "
                                                            "(1 pending; see `fedspec status`).\n")


def test_no_results_is_one_line_and_non_zero(tmp_path: Path) -> None:
    res = subprocess.run(fedspec_cmd("plots", "--root", str(tmp_path)), capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "no results yet" in res.stderr and "Traceback" not in res.stderr


def test_bad_format_is_refused(tmp_path: Path) -> None:
    res = subprocess.run(fedspec_cmd("plots", "--root", str(tmp_path), "--format", "gif"), capture_output=True, text=True)
    assert res.returncode != 0 and "--format: gif not allowed" in res.stderr


def test_an_out_that_is_a_file_is_named_as_such(root: Path) -> None:
    """It said only "error: OUT: File exists"."""
    (root / "out.png").write_bytes(b"x")
    res = subprocess.run(fedspec_cmd("plots", "--root", str(root), "--out", str(root / "out.png")), capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.splitlines() == [f"error: --out: {root / 'out.png'} is a file, not a folder"]
    assert (root / "out.png").read_bytes() == b"x"


def test_status_imports_no_torch(tmp_path: Path) -> None:
    code = ("import sys; from fedspec.cli.main import main; "
            f"main(['status', '--root', {str(tmp_path)!r}]); print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip().endswith("False"), res.stdout + res.stderr


def test_several_results_of_one_seed_are_named_not_averaged_silently(root: Path) -> None:
    """A trial `fedspec run --name trial` of FedAvg at α 0.5, seed 1, joined the grid's item of that seed in every mean."""
    from fedspec.plots.make import make_plots

    _, notes = make_plots(root, root / "p", ["png"])
    assert not any("as if of different seeds" in n for n in notes)
    assert "as if of different seeds" not in (root / "p" / "summary.md").read_text()
    (root / "paper_results" / "trial.csv").write_text(to_csv_text(rows("fedavg", 0.5, 1, [0.1, 0.1])))
    _, notes = make_plots(root, root / "p", ["png"])
    line = ("fedavg α = 0.5, seed 1: 2 results (fedavg_dirichlet_alpha0.5_seed1, trial) are averaged as if of different "
            "seeds; move all but one out of paper_results")
    assert line in notes
    assert (root / "p" / "summary.md").read_text().endswith(f"\n{line}.\n")


def test_a_csv_without_the_plotted_columns_is_skipped_not_a_traceback(root: Path, tmp_path: Path) -> None:
    """A CSV with round, method and test_accuracy but no alpha passed the check and ended in KeyError: 'alpha'."""
    alone = tmp_path / "alone"
    (alone / "paper_results").mkdir(parents=True)
    (alone / "paper_results" / "x.csv").write_text("round,method,test_accuracy\n1,fedavg,0.5\n")
    res = subprocess.run(fedspec_cmd("plots", "--root", str(alone)), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.splitlines() == [
        f"error: {alone / 'paper_results'}: no results yet (x.csv: not a fedspec results file (no task, partition, alpha, "
        "seed, frobenius_gap, rank, uplink_bytes, downlink_bytes)) (run `fedspec worker` first)"]
    (root / "paper_results" / "x.csv").write_text("round,method,test_accuracy\n1,fedavg,0.5\n")
    res = subprocess.run(fedspec_cmd("plots", "--root", str(root)), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "x.csv: not a fedspec results file (no task, partition" in res.stderr, res.stderr


def test_results_of_two_tasks_are_never_drawn_together(root: Path) -> None:
    """A trial `fedspec run --task tweets-minilm` in a digits root went into the digits figures and summary: its
    FedSpec α 0.5 stood beside the grid's digits results, or was averaged with them as another seed."""
    tweets = [dict(r, task="tweets-minilm") for r in rows("fedspec", 0.5, 7, [0.4, 0.5])]
    (root / "paper_results" / "tweets_trial.csv").write_text(to_csv_text(tweets))
    res = subprocess.run(fedspec_cmd("plots", "--root", str(root)), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.splitlines() == [
        f"error: {root / 'paper_results'}: results of 2 tasks (digits: 6 (centralized_seed1, fedavg_dirichlet_alpha0.5_seed1, "
        "…), tweets-minilm: 1 (tweets_trial)); one figure would mix them: pass --task digits or --task tweets-minilm"]
    assert not (root / "plots").exists()
    res = subprocess.run(fedspec_cmd("plots", "--root", str(root), "--task", "digits"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    line = "results of other tasks left out (tweets-minilm: 1 (tweets_trial))"
    assert line in " ".join(res.stderr.split())
    summary = pd.read_csv(root / "plots" / "summary.csv").set_index(["method", "alpha"])
    assert summary.loc[("fedspec", 0.5)]["seeds"] == 2 and summary.loc[("fedspec", 0.5)]["final_acc_mean"] == pytest.approx(0.85)
    assert (root / "plots" / "summary.md").read_text().endswith(f"\n{line}.\n")
    res = subprocess.run(fedspec_cmd("plots", "--root", str(root), "--task", "tweets-minilm"), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert pd.read_csv(root / "plots" / "summary.csv")["final_acc_mean"].tolist() == [0.5]
    res = subprocess.run(fedspec_cmd("plots", "--root", str(root), "--task", "sst2-bert"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith(f"error: --task: {root / 'paper_results'} has no results of task 'sst2-bert'")


def test_results_of_other_settings_are_named_not_averaged_silently(root: Path) -> None:
    """A trial `fedspec run --seed 9 --rounds 3` in a grid's root joined the grid's FedAvg α 0.5 as a third seed."""
    from fedspec.config import make_spec
    from fedspec.plots.make import make_plots

    specs = {i["id"]: i["spec"] for i in json.loads((root / "distributed_work" / "work_queue.json").read_text())["items"]}
    _, notes = make_plots(root, root / "p", ["png"], specs)
    assert not any("other settings" in n for n in notes)
    (root / "paper_results" / "trial.csv").write_text(to_csv_text(rows("fedavg", 0.5, 9, [0.1, 0.1, 0.1])))
    _, notes = make_plots(root, root / "p", ["png"], specs)  # no checkpoint, not in the queue: its settings are not known
    assert not any("other settings" in n for n in notes)
    ck = root / "checkpoints_distributed" / "trial"
    trial = make_spec(task="digits", clients=5, min_client_size=10, rounds=3, seed=9, parallel_clients="off", client_retries=3)
    save_checkpoint(ck, "trial", trial.spec_hash(), Checkpoint(round=3, state={}, aggregator={}, batch_size=16), trial.hashed_fields())
    _, notes = make_plots(root, root / "p", ["png"], specs)
    rounds = make_spec().rounds
    line = (f"1 of 6 results were run with other settings than the rest (trial (rounds {rounds} -> 3)) and are averaged with "
            "them as the same experiment; move them out of paper_results, or give each setting its own root")
    assert line in notes  # how clients were trained (together, retried) is not a setting that makes another experiment
    assert (root / "p" / "summary.md").read_text().endswith(f"\n{line}.\n")


def test_a_figure_with_nothing_to_draw_is_named_in_a_note_not_written_empty(tmp_path: Path) -> None:
    """A root of FedAvg IID runs drew an empty rank figure and an empty α figure, and printed matplotlib's UserWarning."""
    res_dir = tmp_path / "paper_results"
    res_dir.mkdir()
    (res_dir / "fedavg_iid.csv").write_text(to_csv_text(rows("fedavg", None, 1, [0.5, 0.6], partition="iid")))
    (res_dir / "centralized.csv").write_text(to_csv_text(rows("centralized", None, 1, [0.9, 0.95], partition="pooled")))
    out = tmp_path / "plots"
    out.mkdir()
    (out / "rank_vs_round.png").write_bytes(b"an earlier run's figure")
    res = subprocess.run(fedspec_cmd("plots", "--root", str(tmp_path)), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    notes = " ".join(res.stderr.split())
    assert "rank_vs_round not drawn: no FedSpec results" in notes
    assert "final_accuracy_vs_alpha not drawn: no Dirichlet results" in notes
    assert f"removed from {out} the earlier rank_vs_round.png" in notes
    assert "Warning" not in res.stderr, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["accuracy_vs_round.png", "communication_vs_accuracy.png", "gap_vs_round.png",
                                                     "label_distribution.png", "summary.csv", "summary.md"]

    (res_dir / "fedavg_iid.csv").unlink()  # a trial centralized run alone: one note for the figures of federated rounds
    res = subprocess.run(fedspec_cmd("plots", "--root", str(tmp_path)), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "Warning" not in res.stderr, res.stderr
    assert ("accuracy_vs_round, gap_vs_round, communication_vs_accuracy, label_distribution not drawn: no FedAvg or FedSpec "
            "results, only centralized ones") in " ".join(res.stderr.split())
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv", "summary.md"]


def test_final_accuracy_vs_alpha_marks_the_grids_alphas_and_draws_iid_and_centralized_as_references(root: Path) -> None:
    import matplotlib

    from fedspec.plots.figures import final_accuracy_vs_alpha, style

    (root / "paper_results" / "fedspec_iid.csv").write_text(to_csv_text(rows("fedspec", None, 1, [0.6, 0.88], partition="iid")))
    data, _ = load_results(root)
    with style(), matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text in the SVG
        final_accuracy_vs_alpha(data, root / "alpha.svg")
    svg = (root / "alpha.svg").read_text()
    for text in ("FedAvg", "FedSpec", "FedSpec, IID", "Centralized", ">0.1<", ">0.5<"):
        assert text in svg, text
    assert "FedAvg, IID" not in svg  # no FedAvg IID result: no line for it


def test_round_axes_show_whole_rounds(root: Path) -> None:
    """A 3-round run's rank figure was ticked 1.00, 1.25, 1.50 …"""
    import re

    import matplotlib

    from fedspec.plots.figures import accuracy_vs_round, rank_vs_round, style

    data, _ = load_results(root)
    for draw in (rank_vs_round, accuracy_vs_round):
        with style(), matplotlib.rc_context({"svg.fonttype": "none"}):
            draw(data, root / "f.svg")
        ticks = re.findall(r">(\d+(?:\.\d+)?)</text>", (root / "f.svg").read_text())
        assert {"1", "2", "3"} <= set(ticks), (draw.__name__, ticks)
        assert not [t for t in ticks if "." in t and float(t) > 1], (draw.__name__, ticks)  # accuracy ticks (0.5 …) stay
