"""A worker name that is stable per machine and unique per concurrent process.

The machine part is random, made once and kept in a local file outside the
shared root; a second worker started on the same machine takes the next free
slot (held by a local lock while it runs): ``mac-3f2a``, ``mac-3f2a-1``, ...
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
from pathlib import Path

from filelock import FileLock, Timeout

from fedspec.config import unportable
from fedspec.errors import ConfigError
from fedspec.queue.claims import WORKER_NAME_RE

MAX_SLOTS = 64
_held: list[FileLock] = []  # slot locks live as long as the process


def local_dir() -> Path:
    env = os.environ.get("FEDSPEC_HOME")
    if env:
        base = Path(env)
    elif os.name == "nt":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "fedspec"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "fedspec"
    base.mkdir(parents=True, exist_ok=True)
    return base


def check_worker_name(name: str) -> str:
    if not WORKER_NAME_RE.match(name):
        raise ConfigError(f"--name: {name!r} is not a valid worker name (1-64 letters, digits, '_' or '-')")
    why = unportable(name)  # its heartbeat is <name>.json
    if why:
        raise ConfigError(f"--name: {name!r} is not a valid worker name ({why})")
    return name


def default_worker_name() -> str:
    folder = local_dir()
    id_file = folder / "machine_id"
    if not id_file.exists():
        id_file.write_text(secrets.token_hex(2))
    machine = re.sub(r"[^A-Za-z0-9]", "", id_file.read_text().strip())[:8] or "0000"
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:24].strip("-") or "host"
    for slot in range(MAX_SLOTS):
        if _hold(folder / f"slot-{slot}.lock"):
            return f"{host}-{machine}" + (f"-{slot}" if slot else "")
    raise ConfigError(f"{folder}: {MAX_SLOTS} workers already run on this machine; pass --name")


def hold_name(name: str, root: Path) -> str:
    """Hold a ``--name`` for this process in ``root`` on this machine; a second worker started here under it is refused.

    Two live workers of one name take each other's items over without end:
    each counts the other's claims as its own leftovers from a crash.  The
    lock (outside the root, like the default name's slot) covers this
    machine; a namesake on another machine is caught by its heartbeats
    (:class:`fedspec.queue.heartbeat.Heartbeat`).
    """
    key = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:12]
    if not _hold(local_dir() / f"name-{name}-{key}.lock"):
        raise ConfigError(f"--name {name}: another worker on this machine already runs under this name in {root}; "
                          "give each worker its own --name, or leave --name out (the default is unique)")
    return name


def _hold(lock_file: Path) -> bool:
    """Take a local lock for the life of this process; False when another process holds it."""
    lock = FileLock(str(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return False
    _held.append(lock)
    return True
