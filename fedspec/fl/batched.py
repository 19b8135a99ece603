"""Train the sampled clients of a round together: ``torch.func`` + ``vmap`` over stacked client parameters.

For small models a client's step is a handful of tiny matrix products, and
running ten clients one after another is mostly Python and dispatch overhead.
Here every trainable tensor gets a leading client dimension; one vmapped
forward/backward computes all clients' gradients at once, and Adam(W) with
gradient clipping and the LoRA rank mask is applied functionally.

Each client sees exactly the batches it would see alone (same seed, same
order).  Batches are padded to the batch size with zero-weight samples, and
clients with fewer steps are padded with no-op steps, so the loss of every
real batch is the mean over its real samples and padded steps change nothing.
The result equals the sequential path up to float rounding (tested).

Only for fixed-size inputs (``TensorExamples``), Adam/AdamW and models small
enough to pay; :func:`batching_applies` decides, the loop falls back to
sequential training otherwise (and for a client whose update is not finite).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from fedspec.fl.client import LocalResult, TrainSettings
from fedspec.fl.lora import State, set_state
from fedspec.fl.tasks.base import Batch, TensorExamples

# Above this many parameters a single client's step is heavy enough that
# batching clients no longer removes meaningful overhead (and memory grows K×).
MAX_PARAMS = 2_000_000
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def batching_applies(model: nn.Module, data: object, settings: TrainSettings, mode: str) -> bool:
    """Whether a round's clients are trained together (``mode``: auto, on, off)."""
    if mode == "off":
        return False
    supported = isinstance(data, TensorExamples) and settings.optimizer in ("adam", "adamw")
    if mode == "on":
        return supported
    return supported and sum(p.numel() for p in model.parameters()) <= MAX_PARAMS


def _client_batches(indices: np.ndarray, settings: TrainSettings, seed: int) -> list[np.ndarray]:
    """The batches a client trains on, in order: the same draw as the sequential path."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(settings.local_epochs):
        order = indices[torch.randperm(len(indices), generator=gen).numpy()]
        out.extend(order[b : b + settings.batch_size] for b in range(0, len(order), settings.batch_size))
    return out


def train_clients_batched(
    model: nn.Module,
    logits: Callable[[nn.Module, Batch], torch.Tensor],
    data: TensorExamples,
    client_indices: list[np.ndarray],
    start: State,
    settings: TrainSettings,
    seeds: list[int],
    device: torch.device,
) -> list[LocalResult]:
    """Train every client from ``start`` at once; returns one result per client, in order."""
    set_state(model, start)
    model.train()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())
    k = len(client_indices)
    params = {n: start[n].to(device).unsqueeze(0).repeat(k, *([1] * start[n].dim())).clone() for n in names}
    exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
    exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}
    masks = _rank_masks(names, params, settings)

    plans = [_client_batches(idx, settings, s) for idx, s in zip(client_indices, seeds)]
    steps = max(len(p) for p in plans)
    bsz = settings.batch_size
    feat = data.features
    labels_all = torch.as_tensor(data.labels, dtype=torch.long)

    def loss_fn(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, ({**frozen, **p}, buffers), (x,))
        per = nn.functional.cross_entropy(out, y, reduction="none")
        return (per * w).sum() / w.sum().clamp_min(1.0)

    grad_fn = vmap(grad_and_value(loss_fn))
    loss_sum = torch.zeros(k, dtype=torch.float64)
    loss_count = torch.zeros(k, dtype=torch.float64)
    t = torch.zeros(k, device=device)
    lr = settings.lr
    b1, b2 = ADAM_BETAS
    # All batches of all clients as one index tensor [steps, clients, batch] (-1 = padding).
    plan_idx = torch.full((steps, k, bsz), -1, dtype=torch.long)
    for c, plan in enumerate(plans):
        for st, batch_idx in enumerate(plan):
            plan_idx[st, c, : len(batch_idx)] = torch.as_tensor(batch_idx, dtype=torch.long)
    weights_all = (plan_idx >= 0).to(feat.dtype)
    safe = plan_idx.clamp_min(0)
    x_all = feat[safe].to(device)
    y_all = labels_all[safe].to(device)
    w_all = weights_all.to(device)
    active_all = weights_all.sum(-1) > 0  # [steps, clients]
    for step in range(steps):
        x, y, w = x_all[step], y_all[step], w_all[step]
        active = active_all[step]
        act = active.to(device)
        grads, losses = grad_fn(params, x, y, w)
        if settings.grad_clip is not None:
            sq = sum(g.pow(2).flatten(1).sum(1) for g in grads.values())
            coef = (settings.grad_clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)
            grads = {n: g * coef.view(-1, *([1] * (g.dim() - 1))) for n, g in grads.items()}
        t = t + act.to(t.dtype)
        bc1 = 1 - b1 ** t.clamp_min(1)
        bc2 = 1 - b2 ** t.clamp_min(1)
        for n in names:
            shape = (-1, *([1] * (params[n].dim() - 1)))
            a = act.view(shape)
            g = grads[n]
            m_new = exp_avg[n] * b1 + g * (1 - b1)
            v_new = exp_avg_sq[n] * b2 + g * g * (1 - b2)
            denom = (v_new.sqrt() / bc2.sqrt().view(shape)) + ADAM_EPS
            p_new = params[n] - (lr / bc1.view(shape)) * m_new / denom
            if n in masks:
                p_new = p_new * masks[n]
            params[n] = torch.where(a, p_new, params[n])
            exp_avg[n] = torch.where(a, m_new, exp_avg[n])
            exp_avg_sq[n] = torch.where(a, v_new, exp_avg_sq[n])
        loss_sum += torch.where(active, losses.detach().cpu().double(), torch.zeros_like(loss_sum))
        loss_count += active.double()
    # One op per tensor instead of one per tensor and client: unbind gives each client a view of the stack.
    per_client = {n: params[n].detach().to("cpu", torch.float32).unbind(0) for n in names}
    finite = torch.stack([torch.isfinite(params[n]).flatten(1).all(1) for n in names]).all(0).tolist()
    results = []
    for c in range(k):
        state = {n: per_client[n][c] for n in names}
        # A client whose update is not finite reports a NaN loss: the loop retries it alone.
        mean = float(loss_sum[c] / loss_count[c]) if loss_count[c] > 0 and finite[c] else math.nan
        results.append(LocalResult(state=state, num_samples=len(client_indices[c]), mean_loss=mean))
    return results


def _rank_masks(names: list[str], params: dict[str, torch.Tensor], settings: TrainSettings) -> dict[str, torch.Tensor]:
    """0/1 masks that hold LoRA components beyond the active rank at zero (broadcast over clients)."""
    masks = {}
    for pair in settings.pairs:
        a, b = params[pair.a], params[pair.b]
        ma = torch.zeros_like(a[0])
        ma[: settings.rank] = 1
        mb = torch.zeros_like(b[0])
        mb[:, : settings.rank] = 1
        masks[pair.a], masks[pair.b] = ma, mb
    return masks
