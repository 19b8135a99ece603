"""One exception hierarchy for everything a user can cause or see.

The CLI turns any :class:`FedspecError` into one line on stderr and a non-zero
exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import NamedTuple


class FedspecError(Exception):
    """Base of every error fedspec reports to a user as one clear line."""

    exit_code: int = 2


class ConfigError(FedspecError):
    """A grid file, an experiment setting or a command-line value is invalid."""


class RootError(FedspecError):
    """The root folder is missing, not a fedspec root, or not writable."""


def no_such_root(root: Path) -> RootError:
    """The error for a --root that is not there, for commands that only read one."""
    return RootError(f"{root}: no such folder (a typo, or a shared folder not mounted?)")


class CheckpointError(FedspecError):
    """A checkpoint is torn, foreign, or belongs to a different item spec."""


class NotSyncedYet(CheckpointError):
    """A file is an iCloud placeholder or has not arrived yet: try again later, not a failure."""


class QueueError(FedspecError):
    """The work queue file is unreadable or inconsistent."""


class AggregationError(FedspecError):
    """The server could not aggregate a round (e.g. no client survived)."""


class TaskError(FedspecError):
    """A task's data or model could not be loaded (the network, a data folder or a package is missing here).

    Not the item's fault: a worker hands the item back for machines that can
    load the task, instead of counting a failed attempt against it.
    """


class LeaseLost(FedspecError):
    """This worker no longer holds the item: a peer claimed a newer generation.

    Raised at a commit point so that nothing more is written for the item.
    """

    exit_code = 3


class NameInUse(FedspecError):
    """Another live worker writes this worker's heartbeat: two machines run a worker under one ``--name``.

    Each would count the other's claims as its own leftovers and take them
    over without end, so the one that notices hands its item back and stops.
    """

    exit_code = 1


class StorageError(FedspecError):
    """The file system under the root refused a write (full, over quota, read-only) or cannot be reached (a share dropped).

    The machine's problem, not the item's: a worker hands the item back
    without counting a failed attempt and stops (with --wait, waits for a
    folder that cannot be reached), instead of failing every item of the
    grid in turn.
    """

    exit_code = 1


class FolderUnreachable(StorageError):
    """The shared folder cannot be reached (a share dropped, the network is down): it may come back by itself.

    ``cause`` is the system's error in one line; ``fate`` what became of the
    item the worker held when it happened ("" if none).
    """

    def __init__(self, message: str, cause: str, fate: str = "") -> None:
        super().__init__(message)
        self.cause, self.fate = cause, fate


def _errnos(**hints: str) -> dict[int, str]:
    return {getattr(errno, name): hint for name, hint in hints.items() if hasattr(errno, name)}


# errno values that say the file system (or the disk under it) refuses writes, whichever file is written ...
STORAGE_ERRNOS = _errnos(ENOSPC="disk full", EDQUOT="disk quota exceeded", EROFS="read-only file system",
                         EFBIG="over the file size limit")
# ... or that the folder cannot be reached: a network share that dropped, a disk that fails.
UNREACHABLE_ERRNOS = _errnos(ENOTCONN="shared folder disconnected", ESTALE="shared folder remounted or gone",
                             EHOSTDOWN="file server down", EHOSTUNREACH="file server unreachable",
                             ENETDOWN="network down", ENETUNREACH="network unreachable",
                             ETIMEDOUT="file server not answering", EIO="the disk or share failed a read or write")


# Windows reports a dropped share with codes that CPython maps to EINVAL or ENOENT (PC/errmap.h), so
# they are recognised by the Windows code itself (OSError.winerror, Windows only).  Its own words
# ("The specified network name is no longer available.") already say what happened.
WINERRORS_STORAGE = {39: "disk full"}  # ERROR_HANDLE_DISK_FULL (ERROR_DISK_FULL, 112, is already ENOSPC)
WINERRORS_UNREACHABLE = dict.fromkeys(
    (51, 53, 54, 55, 58, 59, 64, 67,  # ERROR_REM_NOT_LIST, _BAD_NETPATH, _NETWORK_BUSY, _DEV_NOT_EXIST, _BAD_NET_RESP,
                                      # _UNEXP_NET_ERR, _NETNAME_DELETED, _BAD_NET_NAME
     121, 1222, 1231, 1232, 1236),    # ERROR_SEM_TIMEOUT, _NO_NETWORK, _NETWORK_UNREACHABLE, _HOST_UNREACHABLE, _CONNECTION_ABORTED
    "shared folder unreachable")


def _kind(err: OSError) -> tuple[str, str] | None:
    """("storage" or "unreachable", what it means) when ``err`` is the machine's file system's, else None."""
    winerror = getattr(err, "winerror", None)
    if winerror in WINERRORS_STORAGE:
        return "storage", WINERRORS_STORAGE[winerror]
    if winerror in WINERRORS_UNREACHABLE:
        return "unreachable", WINERRORS_UNREACHABLE[winerror]
    if err.errno in STORAGE_ERRNOS:
        return "storage", STORAGE_ERRNOS[err.errno]
    if err.errno in UNREACHABLE_ERRNOS:
        return "unreachable", UNREACHABLE_ERRNOS[err.errno]
    return None


def is_unreachable(err: OSError) -> bool:
    """True when ``err`` says the folder cannot be reached (a dropped share), which may pass by itself."""
    kind = _kind(err)
    return kind is not None and kind[0] == "unreachable"


def storage_advice(err: OSError) -> str | None:
    """What to do when ``err`` says the root's file system refuses writes or cannot be reached; None for any other error."""
    kind = _kind(err)
    if kind is None:
        return None
    return "free space or make the folder writable" if kind[0] == "storage" else "reconnect the folder"


class FolderFailure(NamedTuple):
    """What an OSError under a root means for the command that hit it (a worker, ``fedspec run``)."""

    cause: str  # the error in one line, "(<root> is gone)" added where the root itself vanished
    advice: str | None  # what to do; None when the error is not the machine's file system's (an item's own)
    unreachable: bool  # the folder may come back by itself (a dropped share, an unmounted root): --wait waits


def folder_failure(err: OSError, root: Path) -> FolderFailure:
    """Read ``err``, raised by work under ``root``: a full or read-only disk, a dropped share, a root that is gone, or none of those.

    A root that is gone (macOS unmounts a dropped share) makes any file under
    it "not found"; that is the folder's failure, not the file's.
    """
    gone = isinstance(err, FileNotFoundError) and not Path(root).exists()
    cause = describe_os_error(err) + (f" ({root} is gone)" if gone else "")
    return FolderFailure(cause, storage_advice(err) or ("reconnect the folder" if gone else None), is_unreachable(err) or gone)


def describe_os_error(err: OSError) -> str:
    """One line for an OSError: the file, the system's words, and what they mean where that helps."""
    where = f"{err.filename}: " if err.filename else ""
    kind = _kind(err)
    hint = kind[1] if kind else "permission denied" if err.errno == errno.EACCES else None
    return f"{where}{err.strerror or err}" + (f" ({hint})" if hint and hint.lower() != (err.strerror or "").lower() else "")
