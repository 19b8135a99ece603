"""FedSpec: the rank-r truncated SVD of the ideal update Σ wᵢBᵢAᵢ, with an adaptive rank.

Per adapted layer the server computes the SVD of the weighted sum of client
products from stacked factors (never the dense matrix), keeps the top r
components and refactors them as ``B = U√Σ``, ``A = √Σ Vᵀ``.  The rank is one
number for the whole model: when the share of energy (Σσ², the squared
Frobenius gap) that rank r leaves out exceeds ``tail_threshold``, the rank
grows to ``min(r + step, r_max)`` *this* round, and clients train at that
rank from the next round on.  It never passes the rank the widest adapted
layer can hold (min(d_out, d_in)), whatever ``r_max`` says.
"""

from __future__ import annotations

import math

import torch

from fedspec.fl.aggregators.base import Aggregate, active, non_lora_names, normalize, weighted_average
from fedspec.fl.aggregators.factored import ThinSVD, split_balanced, stack_factors, svd_of_product, tail_energy
from fedspec.fl.lora import LoraPair, State, rank_capacity

# A singular value this small relative to the layer's largest is a component
# the clients never trained; it is re-initialised so that it can learn.
DEAD_COMPONENT_RTOL = 1e-10


def spectra(states: list[State], weights: list[float], pairs: list[LoraPair], rank: int, keep: int | None = None) -> list[ThinSVD]:
    """The SVD of Σ wᵢBᵢAᵢ for every layer (weights normalized), singular vectors up to ``keep``."""
    out = []
    for pair in pairs:
        bs, as_ = zip(*(active(s, pair, rank) for s in states))
        out.append(svd_of_product(*stack_factors(list(bs), list(as_), weights), keep=keep))
    return out


def choose_rank(svds: list[ThinSVD], rank: int, max_rank: int, step: int, threshold: float) -> tuple[int, float]:
    """Adaptive rank rule over the whole model.

    Returns the new rank and the tail energy ratio at the *old* rank that the
    decision was made on.
    """
    tail = total = 0.0
    for svd in svds:
        t, s = tail_energy(svd.S, rank)
        tail, total = tail + t, total + s
    ratio = tail / total if total > 0 else 0.0
    new_rank = min(rank + step, max_rank) if ratio > threshold else rank
    return new_rank, ratio


def fedspec(
    states: list[State],
    weights: list[float],
    pairs: list[LoraPair],
    rank: int,
    max_rank: int,
    step: int,
    threshold: float,
    generator: torch.Generator | None = None,
) -> Aggregate:
    """One FedSpec aggregation.

    Parameters
    ----------
    states
        Client states with adapters of width ``max_rank``, active rank ``rank``.
    generator
        Source for re-initialising components with zero singular value (their
        A row gets LoRA's usual random init, their B column stays zero, so the
        model's function is unchanged but the component can learn).

    Returns
    -------
    Aggregate
        Adapters of width ``max_rank`` whose first ``new_rank`` components hold
        the truncated SVD; ``gap`` and ``tail_energy`` are those of the new
        rank; ``extra['tail_before']`` is the ratio the rank decision used.
    """
    w = normalize(weights)
    new = weighted_average(states, w, non_lora_names(states[0], pairs))
    capacity = rank_capacity(states[0], pairs)
    limit = max_rank if capacity is None else min(max_rank, capacity)  # the rank no layer can hold is never reported
    svds = spectra(states, w, pairs, rank, keep=min(rank + step, limit))
    new_rank, tail_before = choose_rank(svds, rank, limit, step, threshold)
    new_rank = min(new_rank, limit)
    gap_sq = tail_sq = total_sq = 0.0
    for pair, svd in zip(pairs, svds):
        a_full = torch.zeros_like(states[0][pair.a])
        b_full = torch.zeros_like(states[0][pair.b])
        k = min(new_rank, svd.S.numel())
        b, a = split_balanced(svd, k)
        b_full[:, :k], a_full[:k] = b.to(torch.float32), a.to(torch.float32)
        smax = float(svd.S[0]) if svd.S.numel() else 0.0
        dead = [i for i in range(new_rank) if i >= svd.S.numel() or float(svd.S[i]) <= DEAD_COMPONENT_RTOL * smax]
        if dead:
            fresh = _lora_a_init(a_full.shape, generator)
            for i in dead:
                a_full[i], b_full[:, i] = fresh[i], 0.0
        t, s = tail_energy(svd.S, k)
        gap_sq, tail_sq, total_sq = gap_sq + t, tail_sq + t, total_sq + s
        new[pair.a], new[pair.b] = a_full, b_full
    ratio = tail_sq / total_sq if total_sq > 0 else 0.0
    return Aggregate(state=new, rank=new_rank, gap=math.sqrt(gap_sq), tail_energy=ratio, extra={"tail_before": tail_before})


def _lora_a_init(shape: torch.Size, generator: torch.Generator | None) -> torch.Tensor:
    """peft's default lora_A init: kaiming-uniform with a=√5, i.e. U(-1/√d_in, 1/√d_in)."""
    bound = 1.0 / math.sqrt(shape[1])
    return (torch.rand(shape, generator=generator, dtype=torch.float32) * 2 - 1) * bound


class FedSpec:
    """Holds the one piece of state that crosses rounds: the current rank."""

    name = "fedspec"

    def __init__(self, rank: int, max_rank: int, step: int, threshold: float) -> None:
        self.rank, self.max_rank, self.step, self.threshold = rank, max_rank, step, threshold

    def aggregate(
        self, states: list[State], weights: list[float], pairs: list[LoraPair], generator: torch.Generator | None = None, **_: object
    ) -> Aggregate:
        result = fedspec(states, weights, pairs, self.rank, self.max_rank, self.step, self.threshold, generator)
        self.rank = result.rank
        return result

    def state_dict(self) -> dict[str, int]:
        return {"rank": self.rank}

    def load_state_dict(self, data: dict[str, int]) -> None:
        self.rank = int(data["rank"])
