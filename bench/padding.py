"""Target 4: dynamic padding vs padding every batch to 128 tokens, one training pass.

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
from fedspec.fl.tasks.base import TokenExamples  # noqa: E402
from fedspec.fl.tasks.common import wrap_lora  # noqa: E402


class Fixed128(TokenExamples):
    def batch(self, indices, device):
        out = super().batch(indices, device)
        pad = 128 - out["input_ids"].shape[1]
        out["input_ids"] = torch.nn.functional.pad(out["input_ids"], (0, pad), value=self.pad_id)
        out["attention_mask"] = torch.nn.functional.pad(out["attention_mask"], (0, pad), value=0)
        return out


def epoch(model, data, idx, batch) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    t0 = time.perf_counter()
    for s in range(0, len(idx), batch):
        b = data.batch(idx[s : s + batch], torch.device("cpu"))
        opt.zero_grad()
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        torch.nn.functional.cross_entropy(out, b["labels"]).backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=256, help="training samples per pass")
    args = parser.parse_args()
    task = load_task("tweets-minilm", args.samples)
    idx = np.arange(len(task.train))
    dyn = task.train
    fixed = Fixed128(dyn.input_ids, dyn.labels, dyn.pad_id)
    lengths = [len(x) for x in dyn.input_ids]
    from transformers import BertConfig, BertForSequenceClassification

    models = {
        "tweets-minilm": lambda: task.build_model(8, 2.0),
        "sst2-bert (random BERT-base)": lambda: wrap_lora(BertForSequenceClassification(BertConfig(num_labels=3)),
                                                          ["query", "value"], ["classifier", "pooler"], 8, 2.0),
    }
    rows, ok = [], True
    for name, make in models.items():
        torch.manual_seed(0)
        model = make()
        model.train()
        epoch(model, dyn, idx[:32], 32)  # warm-up
        t_dyn = epoch(model, dyn, idx, 32)
        t_fix = epoch(model, fixed, idx, 32)
        ratio = t_fix / t_dyn
        ok &= ratio >= 3
        rows.append((name, len(idx), f"{np.mean(lengths):.1f}", f"{t_dyn:.1f} s", f"{t_fix:.1f} s", f"{ratio:.1f}x (>= 3x)",
                     "met" if ratio >= 3 else "MISSED"))
    print(table(rows, ("model", "samples", "mean tokens", "dynamic padding", "pad to 128", "speed-up", "target")))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
