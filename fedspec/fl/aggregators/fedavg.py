"""FedAvg on LoRA factors: B = Σ wᵢBᵢ, A = Σ wᵢAᵢ (McMahan et al., applied factor-wise)."""

from __future__ import annotations

import math

from fedspec.fl.aggregators.base import Aggregate, active, normalize, weighted_average
from fedspec.fl.aggregators.factored import gap_to_ideal
from fedspec.fl.lora import LoraPair, State


def fedavg(states: list[State], weights: list[float], pairs: list[LoraPair], rank: int) -> Aggregate:
    """Average every trainable tensor; report the gap of B̄Ā to the ideal Σ wᵢBᵢAᵢ.

    The average of products is not the product of averages: the gap measures
    exactly that error, computed from stacked factors.
    """
    w = normalize(weights)
    new = weighted_average(states, w)
    if len(states) == 1:  # centralized, or one client sampled: the average is its adapter, the gap exactly 0
        return Aggregate(state=new, rank=rank, gap=0.0, tail_energy=0.0)  # (computed, it was float noise: 1e-15..1e-12)
    gap_sq = ideal_sq = 0.0
    for pair in pairs:
        bs, as_ = zip(*(active(s, pair, rank) for s in states))
        b, a = active(new, pair, rank)
        gap, ideal = gap_to_ideal(list(bs), list(as_), w, b, a)
        gap_sq, ideal_sq = gap_sq + gap**2, ideal_sq + ideal**2
    tail = gap_sq / ideal_sq if ideal_sq > 0 else 0.0
    return Aggregate(state=new, rank=rank, gap=math.sqrt(gap_sq), tail_energy=tail)


class FedAvg:
    """FedAvg holds no state across rounds; the rank is fixed."""

    name = "fedavg"

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def aggregate(self, states: list[State], weights: list[float], pairs: list[LoraPair], **_: object) -> Aggregate:
        return fedavg(states, weights, pairs, self.rank)

    def state_dict(self) -> dict[str, int]:
        return {"rank": self.rank}

    def load_state_dict(self, data: dict[str, int]) -> None:
        self.rank = int(data["rank"])
