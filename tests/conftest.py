"""Shared fixtures: a private cache folder, small specs, helpers to compare CSVs."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Keep the pretrained digits base out of the user's cache, but share it across tests.
    os.environ["FEDSPEC_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def fedspec_cmd(*args: str) -> list[str]:
    """The CLI as a subprocess command (same interpreter as the tests)."""
    return [sys.executable, "-m", "fedspec.cli.main", *args]


def read_rows(path: Path, drop: tuple[str, ...] = ("round_seconds",)) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(fh)]
