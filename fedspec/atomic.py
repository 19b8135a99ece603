"""Atomic file writes for a folder that other machines read (jug's file_store.dump).

Every file in the root is written to a temporary name in the same folder,
flushed and fsynced, then renamed over the target.  The temporary name does not
end in ``.tmp`` because iCloud Drive never syncs such names, and stays hidden
(leading dot) so that sync clients and humans ignore it.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

# Windows refuses to rename over a file another process holds open (sharing
# violation, PermissionError); a sync client or antivirus does that briefly.
_RENAME_RETRIES = 20
_RENAME_BACKOFF_S = 0.05

try:
    import fcntl
except ImportError:  # Windows, where os.fsync is FlushFileBuffers: that flushes the drive's cache already
    fcntl = None  # type: ignore[assignment]

# macOS's fsync hands the data to the drive, whose cache may then lose it, or write it out of
# order, on a power loss or a panic (man fsync); F_FULLFSYNC makes the drive flush too, as Go's
# and Rust's File.sync do there.  A file system without it (SMB, FAT, some FUSE) refuses it: fsync.
_FULLFSYNC = getattr(fcntl, "F_FULLFSYNC", None)
# fdatasync persists the data and whatever metadata reading it back needs (the size), not the
# timestamps, as SQLite and PostgreSQL do on Linux: 470 vs 520 µs for a 60 kB checkpoint here.
_fdatasync = getattr(os, "fdatasync", None)


def _flush(fd: int, data_only: bool) -> None:
    """Persist what was written through ``fd`` to the storage device itself, whatever the platform."""
    if _FULLFSYNC is not None:
        try:
            fcntl.fcntl(fd, _FULLFSYNC)
            return
        except OSError:
            pass
    if data_only and _fdatasync is not None:
        _fdatasync(fd)
    else:
        os.fsync(fd)


def _sync_data(fd: int) -> None:
    _flush(fd, data_only=True)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        _flush(fd, data_only=False)
    except OSError:
        pass  # some network file systems refuse fsync on a directory; the data itself was fsynced
    finally:
        os.close(fd)


def replace_with_retry(src: Path, dst: Path) -> None:
    """``os.replace`` that retries Windows sharing violations for about a second."""
    for attempt in range(_RENAME_RETRIES):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if attempt == _RENAME_RETRIES - 1:
                raise
            time.sleep(_RENAME_BACKOFF_S * (attempt + 1))


def make_folder(folder: Path, root: Path) -> None:
    """Create ``folder`` and whichever of its parents are missing below ``root``, which must exist.

    A root that vanished (a share unmounted, a USB disk pulled) raises
    FileNotFoundError naming it instead of being recreated, empty, on the local
    disk: writes would then go to a phantom root that hides the mount point (or,
    on macOS, makes the share mount beside it as ``/Volumes/share-1``).
    """
    folder = Path(folder)
    try:
        folder.mkdir(exist_ok=True)  # the usual case: one call, the parent is there
        return
    except FileNotFoundError:
        pass
    if not Path(root).is_dir():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(root))
    folder.mkdir(parents=True, exist_ok=True)


def write_bytes(path: Path, data: bytes, sync_folder: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: readers see the old file or the new one, never a torn one.

    ``sync_folder=False`` skips the fsync of the folder after the rename, for
    a caller that writes another file into the same folder right after and
    lets that write's folder fsync persist both renames (one fsync of a
    directory covers every entry changed in it).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            _sync_data(fh.fileno())
        replace_with_retry(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.filename in (None, str(tmp)):  # name the file being written, not its hidden temporary
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_folder:
        _fsync_dir(path.parent)


def write_text(path: Path, text: str) -> None:
    """Atomically write UTF-8 text."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any, compact: bool = False) -> None:
    """Atomically write ``obj`` as key-sorted JSON (stable bytes for equal objects).

    ``compact`` drops the indentation: Python's C encoder only handles that
    case, which matters for large files written every round.
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":")) if compact else json.dumps(obj, indent=1, sort_keys=True)
    write_text(path, text + "\n")
