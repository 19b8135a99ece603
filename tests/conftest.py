"""Shared fixtures: a private cache and home folder, small specs, helpers to compare CSVs."""

from __future__ import annotations

import csv
import os
import signal
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A suite started as a background job of a script (`bash .ci/run &`) inherits SIGINT ignored, and so
# would every fedspec it starts: the tests that stop a worker or `status --watch` with Ctrl-C would
# wait for their timeout.  A handler here is reset to the default in each child at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Keep the pretrained digits base out of the user's cache, but share it across tests.
    os.environ["FEDSPEC_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    # And the per-machine files (machine id, name locks) out of the user's ~/.config.
    os.environ["FEDSPEC_HOME"] = str(tmp_path_factory.mktemp("home"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def fedspec_cmd(*args: str) -> list[str]:
    """The CLI as a subprocess command (same interpreter as the tests)."""
    return [sys.executable, "-m", "fedspec.cli.main", *args]


def read_terminal(primary: int, chunks: list[bytes]) -> None:
    """Collect what a program writes to the pty whose primary end is ``primary`` until it exits (read all along:
    a full terminal buffer would block the program)."""
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # the program exited and closed its end
            return
        if not data:
            return
        chunks.append(data)


def read_rows(path: Path, drop: tuple[str, ...] = ("round_seconds",)) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(fh)]


TINY_WORDS = "a the movie film was is good great bad awful fun boring not very plot acting loved hated it".split()


def make_tiny_sst2(folder: Path) -> tuple[Path, Path]:
    """(model folder, data folder): a tiny BertConfig model + WordPiece tokenizer saved like a hub checkpoint, and SST-2-shaped JSONL.

    Point ``FEDSPEC_SST2_MODEL`` and ``FEDSPEC_SST2_DATA`` at them to run sst2-bert offline.
    """
    import json

    import numpy as np
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    model_dir = folder / "tiny-bert"
    model_dir.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS]
    (model_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(model_dir / "vocab.txt")).save_pretrained(model_dir)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertForSequenceClassification(config).save_pretrained(model_dir)

    data_dir = folder / "sst2"
    data_dir.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 120), ("validation", 40)):
        with open(data_dir / f"{split}.jsonl", "w") as fh:
            for i in range(n):
                label = int(rng.integers(2))
                words = rng.choice(["good", "great", "fun", "loved"] if label else ["bad", "awful", "boring", "hated"],
                                   size=int(rng.integers(1, 4)))
                filler = rng.choice(TINY_WORDS, size=int(rng.integers(2, 14)))
                fh.write(json.dumps({"idx": i, "sentence": " ".join([*filler, *words]), "label": label}) + "\n")
    return model_dir, data_dir
