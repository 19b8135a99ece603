"""The experiment payload: data, partitions, LoRA, aggregators, the round loop, checkpoints."""
