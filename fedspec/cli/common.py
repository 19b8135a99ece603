"""Shared CLI plumbing: one-line errors, logging, root folder checks."""

from __future__ import annotations

import logging
import os
import re
import secrets
import sys
from pathlib import Path

from rich.console import Console

from fedspec.errors import RootError

console = Console(stderr=True)
# Into a log file or a pipe, whole lines: rich otherwise cuts them at 80 columns, paths included,
# which breaks grep and copy-paste.  A terminal keeps rich's word wrap.
console.soft_wrap = not console.is_terminal
out = Console(soft_wrap=True, highlight=False)
if not out.is_terminal and "COLUMNS" not in os.environ:
    # Into a pipe or a file rich assumes 80 columns, and `status`'s tables wrapped item ids there
    # ("fedavg_dirichlet_" / "alpha0.5"), which breaks grep; a log has no width to fit.
    out.width = 200


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record.

    Under a progress bar rich puts a proxy there that prints each line above
    the bar; a handler holding the real stream wrote into the bar's line,
    which the next refresh then garbled.
    """

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[_CurrentStderr()],
    )


def round_line(item_id: str, rounds: int, row: dict) -> str:
    """The line that says a round is committed (worker and run print the same)."""
    return (f"  {item_id} round {row['round']}/{rounds}  acc {row['test_accuracy']:.4f}  rank {row['rank']}  "
            f"{row['round_seconds']:.2f}s")


def shell_path(path: Path) -> str:
    """``path`` as an argument to paste into a command: quoted when it holds a space (POSIX shells and cmd.exe alike)."""
    return f'"{path}"' if " " in str(path) else str(path)


def folder_root(root: Path) -> Path:
    """``root`` with ``~`` expanded, made absolute (errors name the folder, not ``.``); a file given as the root is one clear error."""
    root = Path(root).expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise RootError(f"{root}: --root must be a folder, not a file")
    return root


FSTAB = Path("/etc/fstab")
MOUNTS = Path("/proc/self/mounts")
# File systems that live elsewhere, and fstab options that mount only on demand: where /etc/fstab lists
# one of these and nothing is mounted, the folder is the local disk's empty mount point.
_SHARES = {"cifs", "smb3", "smbfs", "nfs", "nfs4", "afs", "ceph", "glusterfs", "davfs", "9p", "sshfs", "fuse.sshfs", "fuse.rclone"}
_ON_DEMAND = {"noauto", "x-systemd.automount"}


def _mount_table(path: Path) -> list[list[str]]:
    """The fields of an fstab-format table (fstab, /proc/self/mounts), ``\\040``-style escapes decoded; [] if unreadable."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and not fields[0].startswith("#"):
            rows.append([re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), f) for f in fields])
    return rows


def unmounted_share(folder: Path) -> tuple[str, str] | None:
    """(mount point, what mounts there) when ``folder`` lies under a share that /etc/fstab lists but nothing is mounted on.

    On Linux a share that did not mount at boot leaves its mount point as an
    empty folder on the local disk, where a root would be created and trained
    into unseen by the other machines.  (macOS removes an unmounted share's
    /Volumes folder, and Windows its drive letter, so a missing parent catches
    those.)
    """
    real = os.path.realpath(folder)  # first: looking a path up may mount an automounted share
    mounted = {row[1] for row in _mount_table(MOUNTS)}
    if not mounted:  # no /proc (macOS, Windows): nothing to compare with
        return None
    for source, point, fstype, options, *_ in _mount_table(FSTAB):
        point = os.path.normpath(point)
        if point == "/" or point in mounted or not (real == point or real.startswith(point + os.sep)):
            continue
        if fstype in _SHARES or _ON_DEMAND & set(options.split(",")):
            return point, f"{source} ({fstype})"
    return None


def writable_root(root: Path, create: bool = True) -> Path:
    """Resolve ``root`` and check it is a folder that can be written; creates it if missing and ``create``.

    Only the root itself is created, never a missing parent: that is a typo or
    a shared folder that is not there, and a tree made on the local disk would
    run a private queue that no other machine sees.

    ``create=False`` is for joining a queue that must already be there: a
    share that is not mounted yet must not get an empty folder on the local
    disk in its place (it would hide the mount point, or on macOS make the
    share mount beside it as ``/Volumes/share-1``).
    """
    root = folder_root(root)
    if not create and not root.is_dir():
        raise RootError(f"{root}: no such folder (is the shared folder mounted?); "
                        "to start a new queue there, pass --grid FILE")
    share = unmounted_share(root)
    if share is not None:
        raise RootError(f"{root}: nothing is mounted on {share[0]}, where /etc/fstab mounts {share[1]}; "
                        f"mount it first (`mount {share[0]}`): a root there now would be on this machine's own disk, "
                        "seen by no other machine")
    parent = root.absolute().parent
    if not root.is_dir() and not parent.is_dir():
        # A mistyped path or a share that is not there (~/Dropbox on a machine that syncs elsewhere) would
        # otherwise become a private folder tree that no other machine sees, trained into unnoticed.
        if parent.exists():
            raise RootError(f"{root}: {parent} is a file, not a folder")
        raise RootError(f"{root}: parent folder {parent} does not exist (a typo, or a shared folder not mounted?); "
                        "create it first to start a root there")
    try:
        root.mkdir(exist_ok=True)
    except OSError as err:
        raise RootError(f"{root}: cannot create root folder ({err.strerror})") from None
    # One probe name per process: workers started together on one root would otherwise remove each other's probe.
    probe = root / f".fedspec-write-probe.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise RootError(f"{root}: root folder is not writable ({err.strerror})") from None
    return root.resolve()
