"""Which OSErrors are the machine's (a full disk, a dropped share) rather than an item's, on every platform."""

from __future__ import annotations

import errno
import os

import pytest

from fedspec.errors import describe_os_error, is_unreachable, storage_advice


def windows_error(code: int, winerror: int, words: str) -> OSError:
    """An OSError as CPython raises it on Windows: errno from PC/errmap.h, the Windows code in ``winerror``."""
    err = OSError(code, words, r"Z:\fedspec\checkpoint.safetensors")
    err.winerror = winerror  # set by the constructor on Windows only
    return err


@pytest.mark.parametrize("err, advice, unreachable, hint", [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "f"), "free space or make the folder writable", False, "disk full"),
    (OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN), "f"), "reconnect the folder", True, "shared folder disconnected"),
    # ERROR_NETNAME_DELETED: errno EINVAL, which alone is an item's error
    (windows_error(errno.EINVAL, 64, "The specified network name is no longer available"), "reconnect the folder", True,
     "shared folder unreachable"),
    # ERROR_BAD_NETPATH: errno ENOENT (a FileNotFoundError)
    (windows_error(errno.ENOENT, 53, "The network path was not found"), "reconnect the folder", True,
     "shared folder unreachable"),
    (windows_error(errno.EINVAL, 121, "The semaphore timeout period has expired"), "reconnect the folder", True,
     "shared folder unreachable"),
    # ERROR_HANDLE_DISK_FULL: errno EINVAL too
    (windows_error(errno.EINVAL, 39, "The disk is full"), "free space or make the folder writable", False, "disk full"),
    (OSError(errno.EINVAL, os.strerror(errno.EINVAL), "f"), None, False, None),
    (windows_error(errno.EINVAL, 87, "The parameter is incorrect"), None, False, None),  # ERROR_INVALID_PARAMETER
], ids=["enospc", "enotconn", "win-netname-deleted", "win-bad-netpath", "win-sem-timeout", "win-handle-disk-full",
        "einval", "win-invalid-parameter"])
def test_the_machines_errors_are_told_from_an_items(err: OSError, advice: str | None, unreachable: bool,
                                                     hint: str | None) -> None:
    assert storage_advice(err) == advice
    assert is_unreachable(err) is unreachable
    line = describe_os_error(err)
    assert line.startswith(f"{err.filename}: {err.strerror}")
    assert line.endswith(f" ({hint})" if hint else err.strerror)
