"""Checkpoints: round trip, and every way a file in the shared folder can be bad."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_tensors

from fedspec.checkpoint_file import LEGACY_NAME, NAME, read_header
from fedspec.errors import CheckpointError, NotSyncedYet
from fedspec.fl.checkpoint import Checkpoint, CheckpointWriter, load_checkpoint, save_checkpoint


def sample(round_: int = 3, rows: int = 1) -> Checkpoint:
    state = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4, dtype=torch.bfloat16)}
    return Checkpoint(round=round_, state=state, aggregator={"rank": 6}, batch_size=8,
                      rows=[{"round": r + 1, "x": 0.5 + r} for r in range(rows)])


def test_round_trip_keeps_everything_in_one_file(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, "item", "h1", sample(2))
    save_checkpoint(tmp_path, "item", "h1", sample(3))
    got = load_checkpoint(tmp_path, "item", "h1")
    assert got is not None and got.round == 3 and got.aggregator == {"rank": 6} and got.batch_size == 8
    assert got.rows == [{"round": 1, "x": 0.5}]
    assert torch.equal(got.state["a"], sample().state["a"]) and got.state["b"].dtype == torch.bfloat16
    assert [p.name for p in tmp_path.iterdir()] == [NAME]


def test_header_is_readable_alone_and_rows_encoded_once_match_a_fresh_encoding(tmp_path: Path) -> None:
    writer = CheckpointWriter(tmp_path / "w", "item", "h1")
    for r in range(1, 6):
        writer.commit(sample(r, rows=r))  # the writer encodes only the new row each time
    save_checkpoint(tmp_path / "fresh", "item", "h1", sample(5, rows=5))
    meta = read_header(tmp_path / "w")
    assert meta == read_header(tmp_path / "fresh")  # (safetensors orders header keys at random: compare parsed)
    assert meta["round"] == 5 and [r["round"] for r in meta["rows"]] == [1, 2, 3, 4, 5]


def test_a_writer_given_shorter_rows_re_encodes_them(tmp_path: Path) -> None:
    writer = CheckpointWriter(tmp_path, "item", "h1")
    writer.commit(sample(3, rows=3))
    writer.commit(sample(1, rows=1))
    assert read_header(tmp_path)["rows"] == [{"round": 1, "x": 0.5}]


def test_commit_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(f"rename {Path(dst).name}")
        real_replace(src, dst)

    def sync_data(fd: int) -> None:  # fdatasync where there is one
        events.append("sync file data")
        real_sync_data(fd)

    from fedspec import atomic

    real_sync_data = atomic._sync_data
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(atomic, "_sync_data", sync_data)
    monkeypatch.setattr(os, "replace", replace)
    save_checkpoint(tmp_path, "item", "h1", sample(2))
    assert events == ["sync file data", f"rename {NAME}", "fsync folder"]


def test_missing_checkpoint_means_fresh_start(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "none", "item", "h1") is None
    assert read_header(tmp_path / "none") is None


def test_icloud_placeholder_is_not_a_fresh_start(tmp_path: Path) -> None:
    (tmp_path / f".{NAME}.icloud").write_bytes(b"placeholder")
    with pytest.raises(NotSyncedYet):
        load_checkpoint(tmp_path, "item", "h1")


def test_old_two_file_checkpoint_is_named_not_restarted(tmp_path: Path) -> None:
    (tmp_path / LEGACY_NAME).write_text('{"format": 1, "round": 4}')
    with pytest.raises(CheckpointError, match="older fedspec"):
        load_checkpoint(tmp_path, "item", "h1")


def test_other_spec_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, "item", "h1", sample())
    with pytest.raises(CheckpointError, match="different spec"):
        load_checkpoint(tmp_path, "item", "h1-other")


def test_other_spec_is_refused_naming_the_settings_that_differ(tmp_path: Path) -> None:
    """The refusal gave two hashes, so a researcher who changed one option could not tell which (or how to go on)."""
    spec = {"task": "digits", "rounds": 10, "lr": None, "clients": 10}
    save_checkpoint(tmp_path, "item", "h1", sample(), spec=spec)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path, "item", "h2", {**spec, "rounds": 20, "lr": 0.01})
    assert str(err.value) == (f"{tmp_path / NAME}: checkpoint of 'item' belongs to a different spec (lr None -> 0.01, rounds 10 -> 20); "
                              "resume it with its own settings; for the new ones use another item name or --root, or move it away")
    assert load_checkpoint(tmp_path, "item", "h1", spec).round == sample().round
    save_checkpoint(tmp_path, "item", "h1", sample(), spec={**spec, "rounds": "9" * 100_000})  # hand-edited: still one short line
    with pytest.raises(CheckpointError, match=r"rounds '9{38}… -> 10\)") as err:
        load_checkpoint(tmp_path, "item", "h2", spec)
    assert len(str(err.value)) < len(str(tmp_path)) + 250
    # The same settings under another hash (an earlier fedspec's, which leaves out a setting added since at its
    # default) are the same experiment: resumed, where they were once refused with the hashes.
    save_checkpoint(tmp_path, "item", "h1", sample(), spec=spec)
    assert load_checkpoint(tmp_path, "item", "h2", {**spec, "parallel_clients": "auto"}).round == sample().round
    with pytest.raises(CheckpointError, match=r"different spec \(parallel_clients 'auto' -> 'off'\)"):
        load_checkpoint(tmp_path, "item", "h2", {**spec, "parallel_clients": "off"})
    save_checkpoint(tmp_path, "item", "h1", sample())  # a checkpoint without its settings (older fedspec): the hashes only
    with pytest.raises(CheckpointError, match=r"different spec \(item 'item', spec h1; expected 'item', spec h2\)"):
        load_checkpoint(tmp_path, "item", "h2", spec)


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, "item", "h1", sample())
    f = tmp_path / NAME
    f.write_bytes(f.read_bytes()[:-5])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path, "item", "h1")


def test_zeroed_tensor_bytes_of_the_right_length_are_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, "item", "h1", sample())
    f = tmp_path / NAME
    blob = f.read_bytes()
    f.write_bytes(blob[:-24] + bytes(24))  # what a sync client's preallocated, half-written file looks like
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(tmp_path, "item", "h1")


@pytest.mark.parametrize("content", [b"", b"\x10\x00", b"\xff" * 8 + b"{}", b"\x0a\x00\x00\x00\x00\x00\x00\x00{\"__metad",
                                     b"\x02\x00\x00\x00\x00\x00\x00\x00{}", b"\x00\xff garbage"])
def test_torn_or_foreign_file_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / NAME).write_bytes(content)
    with pytest.raises(CheckpointError, match="torn or foreign"):
        load_checkpoint(tmp_path, "item", "h1")
    with pytest.raises(CheckpointError, match="torn or foreign"):
        read_header(tmp_path)


def test_safetensors_of_someone_else_is_refused(tmp_path: Path) -> None:
    (tmp_path / NAME).write_bytes(save_tensors({"w": torch.ones(2)}, metadata={"fedspec": json.dumps({"format": 9, "round": 1}), "rows": "[]"}))
    with pytest.raises(CheckpointError, match="not a fedspec checkpoint"):
        load_checkpoint(tmp_path, "item", "h1")


class _Boom:
    def __reduce__(self):  # runs a command when unpickled
        return (Path.touch, (Path(self.target),))


def test_pickle_in_place_of_tensors_is_refused_without_running_it(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, "item", "h1", sample())
    marker = tmp_path / "pwned"
    boom = _Boom()
    boom.target = str(marker)
    blob = (tmp_path / NAME).read_bytes()
    length = int.from_bytes(blob[:8], "little")
    (tmp_path / NAME).write_bytes(blob[: 8 + length] + pickle.dumps(boom))  # a valid header in front of a pickle
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(tmp_path, "item", "h1")
    assert not marker.exists()


def test_float_states_go_through_numpy_and_give_torchs_bytes(tmp_path: Path) -> None:
    state = {"w": torch.randn(3, 5), "n": torch.arange(4), "h": torch.randn(2, dtype=torch.float64)}
    save_checkpoint(tmp_path, "item", "h1", Checkpoint(round=1, state=state, aggregator={}, batch_size=4))
    blob = (tmp_path / NAME).read_bytes()
    meta = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])["__metadata__"]
    reference = save_tensors(state, metadata=meta)  # what safetensors.torch writes for the same tensors and header
    assert len(blob) == len(reference) and blob[-100:] == reference[-100:]
    assert {k: v for k, v in json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")]).items() if k != "__metadata__"} == \
        {k: v for k, v in json.loads(reference[8 : 8 + int.from_bytes(reference[:8], "little")]).items() if k != "__metadata__"}
    got = load_checkpoint(tmp_path, "item", "h1")
    assert got is not None and all(torch.equal(got.state[k], v) and got.state[k].dtype == v.dtype for k, v in state.items())
