"""Aggregation rules: small pure functions over named tensors, plus thin classes for cross-round state."""

from __future__ import annotations

from fedspec.config import ExperimentSpec
from fedspec.fl.aggregators.base import Aggregate, weighted_average
from fedspec.fl.aggregators.fedavg import FedAvg, fedavg
from fedspec.fl.aggregators.fedspec import FedSpec, fedspec


def make_aggregator(spec: ExperimentSpec) -> FedAvg | FedSpec:
    """The aggregator for a spec's method (centralized runs use FedAvg's bookkeeping with one client)."""
    if spec.method == "fedspec":
        return FedSpec(spec.rank, spec.max_rank, spec.rank_step, spec.tail_threshold)
    return FedAvg(spec.rank)


__all__ = ["Aggregate", "FedAvg", "FedSpec", "fedavg", "fedspec", "make_aggregator", "weighted_average"]
