"""Tasks: ``digits`` (default, offline), ``tweets-minilm`` (offline text), ``sst2-bert`` (the paper)."""

from __future__ import annotations

from fedspec.errors import ConfigError
from fedspec.fl.tasks.base import TaskData

TASKS = ("digits", "tweets-minilm", "sst2-bert")


def load_task(name: str, max_train_samples: int | None = None) -> TaskData:
    """Load a task's data and model factory by name."""
    if name == "digits":
        from fedspec.fl.tasks.digits import load_digits_task

        return load_digits_task(max_train_samples)
    if name == "tweets-minilm":
        from fedspec.fl.tasks.text import load_tweets_task

        return load_tweets_task(max_train_samples)
    if name == "sst2-bert":
        from fedspec.fl.tasks.text import load_sst2_task

        return load_sst2_task(max_train_samples)
    raise ConfigError(f"task: {name!r} is not one of {', '.join(TASKS)}")


__all__ = ["TASKS", "TaskData", "load_task"]
