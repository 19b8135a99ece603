"""What an aggregator returns, and the helpers every rule shares."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fedspec.errors import AggregationError
from fedspec.fl.lora import LoraPair, State


@dataclass
class Aggregate:
    """The new global state and what the round's CSV row reports about it."""

    state: State
    rank: int
    gap: float  # ‖Σ wᵢBᵢAᵢ − BA‖_F summed in quadrature over layers
    tail_energy: float  # share of the ideal update's energy (Σσ²) the new adapter leaves out
    extra: dict[str, float] = field(default_factory=dict)


def normalize(weights: list[float]) -> list[float]:
    total = float(sum(weights))
    if not weights or total <= 0:
        raise AggregationError("no client update to aggregate (all weights are zero)")
    return [float(w) / total for w in weights]


def weighted_average(states: list[State], weights: list[float], names: list[str] | None = None) -> State:
    """Σ wᵢ stateᵢ[name] for every name (weights already normalized), in float64 then back to float32."""
    names = list(states[0]) if names is None else names
    w = torch.tensor(weights, dtype=torch.float64)
    out: State = {}
    for name in names:
        stacked = torch.stack([st[name] for st in states]).to(torch.float64)  # one op per tensor, not per client
        out[name] = torch.tensordot(w, stacked, dims=1).to(torch.float32)
    return out


def non_lora_names(state: State, pairs: list[LoraPair]) -> list[str]:
    lora = {p.a for p in pairs} | {p.b for p in pairs}
    return [n for n in state if n not in lora]


def active(state: State, pair: LoraPair, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B[:, :rank], A[:rank]) of one layer."""
    return state[pair.b][:, :rank], state[pair.a][:rank]
