"""Checkpoints: round trip, and every way a file in the shared folder can be bad."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from fedspec.errors import CheckpointError
from fedspec.fl.checkpoint import META_NAME, Checkpoint, load_checkpoint, save_checkpoint


def sample(round_: int = 3) -> Checkpoint:
    state = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4)}
    return Checkpoint(round=round_, state=state, aggregator={"rank": 6}, batch_size=8, rows=[{"round": 1, "x": 0.5}])


def test_round_trip_keeps_everything_and_only_the_latest_tensor_file(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, "item", "h1", sample(2))
    save_checkpoint(tmp_path, "item", "h1", sample(3))
    got = load_checkpoint(tmp_path, "item", "h1")
    assert got is not None and got.round == 3 and got.aggregator == {"rank": 6} and got.batch_size == 8
    assert torch.equal(got.state["a"], sample().state["a"])
    assert [p.name for p in tmp_path.glob("state_r*")] == ["state_r00003.safetensors"]
    assert not list(tmp_path.glob(".*partial"))


def test_commit_fsyncs_both_files_before_the_rename_and_the_folder_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import stat

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(f"rename {Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_checkpoint(tmp_path, "item", "h1", sample(2))
    assert events == ["fsync file", "rename state_r00002.safetensors", "fsync file", f"rename {META_NAME}", "fsync folder"]


def test_missing_checkpoint_means_fresh_start(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "none", "item", "h1") is None


def test_other_spec_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, "item", "h1", sample())
    with pytest.raises(CheckpointError, match="different spec"):
        load_checkpoint(tmp_path, "item", "h2")


def test_truncated_tensor_file_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, "item", "h1", sample())
    f = tmp_path / "state_r00003.safetensors"
    f.write_bytes(f.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path, "item", "h1")


@pytest.mark.parametrize("content", [b"", b"{\"format\": 1, \"rou", b"\x00\xff garbage", b"[1, 2]"])
def test_torn_or_foreign_meta_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / META_NAME).write_bytes(content)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path, "item", "h1")


class _Boom:
    def __reduce__(self):  # runs a command when unpickled
        return (Path.touch, (Path(self.target),))


def test_pickle_in_place_of_tensors_is_refused_without_running_it(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, "item", "h1", sample())
    marker = tmp_path / "pwned"
    boom = _Boom()
    boom.target = str(marker)
    payload = pickle.dumps(boom)
    (tmp_path / "state_r00003.safetensors").write_bytes(payload)
    meta = json.loads((tmp_path / META_NAME).read_text())
    import hashlib

    meta["state_sha256"] = hashlib.sha256(payload).hexdigest()  # even with a matching hash
    (tmp_path / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(tmp_path, "item", "h1")
    assert not marker.exists()


def test_state_file_cannot_point_outside_the_folder(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, "item", "h1", sample())
    meta = json.loads((tmp_path / META_NAME).read_text())
    meta["state_file"] = "../../etc/passwd.safetensors"
    (tmp_path / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="invalid state_file"):
        load_checkpoint(tmp_path, "item", "h1")
