"""The trainable state of a LoRA model as plain tensors keyed by name.

Adapters are allocated at ``max_rank`` width; only the first ``rank``
components are active.  The inactive rows of A and columns of B are held at
exactly zero, so a model of active rank r computes the same function as a
rank-r adapter, and growing the rank only unmasks components.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LoraPair:
    """Names of the A (r × d_in) and B (d_out × r) factors of one adapted layer."""

    a: str
    b: str


def trainable_names(model: nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


def lora_pairs(names: list[str]) -> list[LoraPair]:
    """Pair every ``...lora_A...`` tensor with its ``...lora_B...`` partner."""
    name_set = set(names)
    pairs = []
    for name in names:
        if ".lora_A." in name:
            partner = name.replace(".lora_A.", ".lora_B.")
            if partner not in name_set:
                raise ValueError(f"LoRA factor {name} has no B partner")
            pairs.append(LoraPair(a=name, b=partner))
    return pairs


def get_state(model: nn.Module) -> State:
    """Copy of the trainable tensors, on the CPU in float32."""
    return {name: p.detach().to("cpu", torch.float32).clone() for name, p in model.named_parameters() if p.requires_grad}


def set_state(model: nn.Module, state: State) -> None:
    """Load ``state`` into the model's trainable parameters (any device)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def rank_capacity(state: State, pairs: list[LoraPair]) -> int | None:
    """The largest rank an adapted layer can hold, min(d_out, d_in) of the widest one; None without adapters.

    A rank past it adds components that no layer's update can use.
    """
    return max((min(state[p.b].shape[0], state[p.a].shape[1]) for p in pairs), default=None)


def mask_inactive(state: State, pairs: list[LoraPair], rank: int) -> State:
    """Zero A rows and B columns beyond ``rank`` (returns new tensors, the input is untouched)."""
    out = dict(state)
    for pair in pairs:
        a = state[pair.a].clone()
        b = state[pair.b].clone()
        a[rank:] = 0
        b[:, rank:] = 0
        out[pair.a], out[pair.b] = a, b
    return out


def mask_model_(model: nn.Module, pairs: list[LoraPair], rank: int) -> None:
    """In-place version of :func:`mask_inactive` on a model's parameters."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for pair in pairs:
            params[pair.a][rank:].zero_()
            params[pair.b][:, rank:].zero_()


def state_bytes(state: State, pairs: list[LoraPair], rank: int) -> int:
    """Bytes a client would send for ``state`` at active rank ``rank`` (inactive parts are not sent)."""
    lora_names = {p.a for p in pairs} | {p.b for p in pairs}
    total = 0
    for pair in pairs:
        a, b = state[pair.a], state[pair.b]
        total += (rank * a.shape[1] + b.shape[0] * rank) * a.element_size()
    for name, t in state.items():
        if name not in lora_names:
            total += t.numel() * t.element_size()
    return total


def is_finite(state: State) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state.values())
