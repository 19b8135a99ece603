"""Atomic writes: temp name in the same folder, rename; Windows sharing violations retried."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fedspec import atomic


def test_write_replaces_whole_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    target.write_text("old")
    atomic.write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n "a": [\n  1,\n  2\n ],\n "b": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_temporary_name_is_hidden_and_not_dot_tmp(tmp_path: Path, monkeypatch) -> None:
    seen: list[str] = []
    real = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", spy)
    atomic.write_text(tmp_path / "y.csv", "1")
    assert seen[0].startswith(".y.csv.") and not seen[0].endswith(".tmp")  # iCloud never syncs *.tmp


def test_sharing_violation_on_rename_is_retried(tmp_path: Path, monkeypatch) -> None:
    real = os.replace
    calls = {"n": 0}

    def busy_twice(src, dst):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise PermissionError(13, "The process cannot access the file because it is being used by another process")
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", busy_twice)
    monkeypatch.setattr(atomic.time, "sleep", lambda s: None)
    atomic.write_text(tmp_path / "z.txt", "ok")
    assert (tmp_path / "z.txt").read_text() == "ok" and calls["n"] == 3


def test_rename_that_never_succeeds_raises_and_cleans_up(tmp_path: Path, monkeypatch) -> None:
    def always_busy(src, dst):
        raise PermissionError(13, "busy")

    monkeypatch.setattr(atomic.os, "replace", always_busy)
    monkeypatch.setattr(atomic.time, "sleep", lambda s: None)
    with pytest.raises(PermissionError):
        atomic.write_text(tmp_path / "z.txt", "ok")
    assert list(tmp_path.iterdir()) == []


def test_make_folder_creates_missing_parents_but_never_a_vanished_root(tmp_path: Path) -> None:
    """An unmounted share must not come back as an empty folder on the local disk (a phantom root)."""
    root = tmp_path / "share"
    root.mkdir()
    atomic.make_folder(root / "distributed_work" / "claims" / "item", root)
    assert (root / "distributed_work" / "claims" / "item").is_dir()
    root.rename(tmp_path / "away")  # as an unmount looks to a process
    with pytest.raises(FileNotFoundError) as caught:
        atomic.make_folder(root / "distributed_work" / "heartbeats", root)
    assert caught.value.filename == str(root)
    assert not root.exists()


@pytest.mark.parametrize("refused", [False, True])
def test_macos_flushes_the_drive_and_falls_back_to_fsync_where_refused(tmp_path: Path, monkeypatch, refused: bool) -> None:
    """macOS's fsync leaves the data in the drive's cache (lost on a power loss); F_FULLFSYNC flushes it.

    SMB and FAT volumes refuse F_FULLFSYNC: plain fsync there, never an error.
    """
    import errno
    from types import SimpleNamespace

    calls: list[str] = []

    def fcntl(fd: int, cmd: int) -> int:
        kind = "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        calls.append(f"fullfsync {kind}")
        if refused:
            raise OSError(errno.ENOTSUP, "Operation not supported")
        return 0

    monkeypatch.setattr(atomic, "fcntl", SimpleNamespace(fcntl=fcntl))
    monkeypatch.setattr(atomic, "_FULLFSYNC", 51)  # its value in macOS's <sys/fcntl.h>
    monkeypatch.setattr(atomic, "_fdatasync", lambda fd: calls.append("fdatasync"))
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: calls.append("fsync"))
    atomic.write_text(tmp_path / "c.json", "{}")
    assert (tmp_path / "c.json").read_text() == "{}"
    if refused:
        assert calls == ["fullfsync file", "fdatasync", "fullfsync folder", "fsync"]
    else:
        assert calls == ["fullfsync file", "fullfsync folder"]
