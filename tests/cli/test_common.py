"""Root folder checks shared by the commands."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from fedspec.cli.common import writable_root


def _check_many(root: str, times: int, errors) -> None:
    for _ in range(times):
        try:
            writable_root(Path(root))
        except Exception as err:  # noqa: BLE001 - the test counts every failure
            errors.put(str(err))
            return


def test_workers_starting_together_all_pass_the_write_check(tmp_path: Path) -> None:
    # Workers started at the same moment each probe the root; a probe file shared between them made one
    # worker's unlink fail ("root folder is not writable (No such file or directory)").
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_check_many, args=(str(tmp_path), 300, errors)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    found = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert found == []
    assert all(p.exitcode == 0 for p in procs)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no probe left behind


def test_a_log_line_under_a_progress_bar_is_printed_above_it() -> None:
    """A worker's warning (client failed, batch size halved) during a round's bar goes through the bar's console.

    Written to the terminal behind rich's back, it landed in the bar's line and
    the next refresh garbled both.
    """
    import io
    import logging

    from rich.console import Console
    from rich.progress import Progress, TextColumn

    from fedspec.cli.common import _CurrentStderr

    screen = io.StringIO()
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("fedspec.tests.bar")
    log.addHandler(handler)
    log.propagate = False
    try:
        with Progress(TextColumn("{task.description}"), console=Console(file=screen, force_terminal=True, width=80),
                      transient=True) as bar:
            bar.add_task("fedavg round 1/2")
            log.warning("client failed, attempt 1 of 3")
    finally:
        log.removeHandler(handler)
    assert "WARNING client failed, attempt 1 of 3" in screen.getvalue()


def test_a_root_under_a_share_that_fstab_lists_but_nothing_mounts_is_refused(tmp_path: Path, monkeypatch) -> None:
    """On Linux a share that did not mount (the NAS was off at boot) leaves an empty folder on the local disk.

    `worker --grid` created its root there, since the parent exists, and ran a
    private queue that no other machine sees.
    """
    from fedspec.cli import common
    from fedspec.errors import RootError

    tmp_path = tmp_path.resolve()  # fstab and /proc name real paths
    lab, usb, disk, spaced = (tmp_path / n for n in ("lab", "usb", "data", "my share"))
    for folder in (lab, usb, disk, spaced, tmp_path / "lab2"):
        folder.mkdir()
    (tmp_path / "link").symlink_to(lab)
    fstab, mounts = tmp_path / "fstab", tmp_path / "mounts"
    fstab.write_text(f"# <file system> <mount point> <type> <options> <dump> <pass>\nUUID=1 / ext4 defaults 0 1\n"
                     f"//nas/lab {lab} cifs credentials=/etc/smb,uid=1000 0 0\n/dev/sdb1 {usb} vfat noauto,user 0 0\n"
                     f"/dev/sdc1 {disk} ext4 defaults 0 2\n//nas/my\\040share {str(spaced).replace(' ', chr(92) + '040')} nfs4 rw 0 0\n")
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\n")
    monkeypatch.setattr(common, "FSTAB", fstab)
    monkeypatch.setattr(common, "MOUNTS", mounts)

    for root, mount_point, source in [(lab / "fedspec", lab, "//nas/lab (cifs)"), (tmp_path / "link" / "fedspec", lab, "//nas/lab (cifs)"),
                                      (usb / "q", usb, "/dev/sdb1 (vfat)"), (spaced / "q", spaced, "//nas/my share (nfs4)")]:
        try:
            writable_root(root)
        except RootError as err:
            assert f"nothing is mounted on {mount_point}, where /etc/fstab mounts {source}; mount it first" in str(err)
        else:
            raise AssertionError(f"{root} was accepted")
        assert not root.exists()
    # A disk that fstab mounts at boot is not second-guessed (a container may copy the host's fstab), nor a mere namesake.
    assert writable_root(disk / "q") == disk / "q" and writable_root(tmp_path / "lab2" / "q") == tmp_path / "lab2" / "q"

    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\n//nas/lab {lab} cifs rw 0 0\n")
    assert writable_root(lab / "fedspec") == lab / "fedspec"
    mounts.unlink()  # no /proc: macOS and Windows, whose unmounted shares leave no folder behind
    assert writable_root(usb / "q") == usb / "q"
