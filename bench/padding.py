"""Target 4: dynamic padding vs padding every batch to 128 tokens, one training pass.

Three batchings of the same shuffled epoch, side by side: every batch padded
to 128; padded to its longest tweet with batches drawn at random; and padded
to its longest tweet with length-grouped batches (``group_by_length``, the
default for text tasks).

tweets-minilm: the shipped MiniLM on the shipped tweets.  sst2-bert: a
random-init BERT-base config (no download) on the same tweets, tokenized with
the same uncased WordPiece vocabulary as bert-base-uncased.  Both paths train
the same LoRA model on the same batches side by side; only the padding differs.

    python bench/padding.py [--samples N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._util import table  # noqa: E402
from fedspec.fl.tasks import load_task  # noqa: E402
from fedspec.fl.tasks.base import TokenExamples, epoch_batches  # noqa: E402
from fedspec.fl.tasks.common import wrap_lora  # noqa: E402


class Fixed128(TokenExamples):
    def batch(self, indices, device):
        out = super().batch(indices, device)
        pad = 128 - out["input_ids"].shape[1]
        out["input_ids"] = torch.nn.functional.pad(out["input_ids"], (0, pad), value=self.pad_id)
        out["attention_mask"] = torch.nn.functional.pad(out["attention_mask"], (0, pad), value=0)
        return out


def epoch(model, data, batches: list[np.ndarray]) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    t0 = time.perf_counter()
    for chosen in batches:
        b = data.batch(chosen, torch.device("cpu"))
        opt.zero_grad()
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        torch.nn.functional.cross_entropy(out, b["labels"]).backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=256, help="training samples per pass")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    task = load_task("tweets-minilm", args.samples)
    dyn = task.train
    fixed = Fixed128(dyn.input_ids, dyn.labels, dyn.pad_id)
    order = np.random.default_rng(0).permutation(len(dyn))  # one shuffled epoch, as a client draws it
    random_batches = epoch_batches(dyn, order, args.batch_size)
    grouped_batches = epoch_batches(dyn, order, args.batch_size, group_by_length=True)  # the default
    from transformers import BertConfig, BertForSequenceClassification

    models = {
        "tweets-minilm": lambda: task.build_model(8, 2.0),
        "sst2-bert (random BERT-base)": lambda: wrap_lora(BertForSequenceClassification(BertConfig(num_labels=3)),
                                                          ["query", "value"], ["classifier", "pooler"], 8, 2.0),
    }
    widths = {name: np.mean([dyn.lengths[b].max() for b in bs]) for name, bs in (("random", random_batches), ("grouped", grouped_batches))}
    print(f"{len(order)} tweets, {dyn.lengths.mean():.1f} tokens on average; mean padded width: pad to 128: 128, "
          f"random batches: {widths['random']:.1f}, length-grouped batches: {widths['grouped']:.1f}")
    rows, ok = [], True
    for name, make in models.items():
        torch.manual_seed(0)
        model = make()
        model.train()
        epoch(model, dyn, random_batches[:1])  # warm-up
        t_fix = epoch(model, fixed, random_batches)
        t_rand = epoch(model, dyn, random_batches)
        t_group = epoch(model, dyn, grouped_batches)
        ratio = t_fix / t_group
        ok &= ratio >= 3
        rows.append((name, f"{t_fix:.1f} s", f"{t_rand:.1f} s ({t_fix / t_rand:.1f}x)", f"{t_group:.1f} s ({ratio:.1f}x)",
                     "met" if ratio >= 3 else "MISSED"))
    print(table(rows, ("model", "pad to 128", "dynamic, random batches", "dynamic, length-grouped (default)",
                       "target >= 3x")))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
