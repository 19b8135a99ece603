"""fedspec: federated LoRA aggregation experiments (FedAvg vs FedSpec) run from a shared folder."""

__version__ = "0.1.0"
