"""Fault-injection harness: the guarantees of shared/DESIGN.md under sustained abuse.

Scenarios (real processes on real folders):

  chaos     4 workers on >= 24 short digits items; every few seconds a random
            worker is killed with kill -9 and restarted, until the grid is done.
  sleepers  a worker is SIGSTOPped past its lease TTL, a peer reclaims, the
            sleeper is SIGCONTed; nothing it writes afterwards may count.
  sync      three replica folders kept in step by a syncer (0-10 s random
            delay, out of order, Dropbox and iCloud conflicted copies, iCloud
            placeholders now and then), one worker each, wall clocks skewed by
            +-5 min with faketime where installed.
  bad-input a catalogue of broken files and arguments: each must give one
            clear line, a non-zero exit, no traceback, nothing overwritten.
  security  a checkpoint replaced by a pickle that would run code; item ids
            and worker names with ../ or separators.

    python bench/chaos.py --scenario all --seed 1 [--quick]

Prints one table of figures against their targets; exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from fedspec.checkpoint_file import NAME as CHECKPOINT  # noqa: E402
from fedspec.checkpoint_file import read_header  # noqa: E402
from fedspec.errors import CheckpointError  # noqa: E402

PY = sys.executable
FEDSPEC = [PY, "-m", "fedspec.cli.main"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


# --------------------------------------------------------------------------- helpers
@dataclass
class Figure:
    name: str
    measured: str
    target: str
    ok: bool | None  # None: context only

    def row(self) -> tuple[str, str, str, str]:
        return self.name, self.measured, self.target, "" if self.ok is None else ("met" if self.ok else "MISSED")


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)

    def add(self, name: str, measured: object, target: str, ok: bool | None) -> None:
        self.figures.append(Figure(name, str(measured), target, ok))


def wait_until(predicate, what: str, timeout: float = 300.0, step: float = 0.02) -> None:
    end = time.time() + timeout
    while not predicate():
        if time.time() > end:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def write_grid(path: Path, *, methods: list[str], alphas: list[float], seeds: list[int], rounds: int, clients: int = 5,
               centralized: bool = False) -> Path:
    path.write_text(
        "[grid]\n"
        f"methods = {json.dumps(methods)}\nalphas = {json.dumps(alphas)}\nseeds = {json.dumps(seeds)}\n"
        f"centralized = {str(centralized).lower()}\n"
        f"[experiment]\nclients = {clients}\nrounds = {rounds}\nmin_client_size = 5\n"
    )
    return path


def wait_for_idle_peer(log: Path, holder_round, rounds: int) -> None:
    """Wait until a ``--wait`` peer says it is idle, with the holder still mid-item (else the fault tests nothing)."""
    wait_until(lambda: log.exists() and "waiting:" in log.read_text(errors="replace"), "the peer to start and idle")
    if holder_round() >= rounds - 5:
        raise RuntimeError(f"the holder reached round {holder_round()} of {rounds} before the fault; raise the scenario's rounds")


def worker(root: Path, name: str, args: list[str], log: Path, prefix: list[str] | None = None) -> subprocess.Popen:
    out = open(log, "a")
    return subprocess.Popen([*(prefix or []), *FEDSPEC, "worker", "--root", str(root), "--name", name, "--threads", "1", *args],
                            stdout=out, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)


def create_queue(root: Path, grid: Path) -> None:
    subprocess.run([*FEDSPEC, "worker", "--root", str(root), "--grid", str(grid), "--max-items", "0"], check=True,
                   capture_output=True, env=ENV)


def status(root: Path) -> dict:
    res = subprocess.run([*FEDSPEC, "status", "--root", str(root), "--json"], capture_output=True, text=True, env=ENV)
    return json.loads(res.stdout) if res.returncode == 0 else {"counts": {}, "items": []}


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if k != "round_seconds"} for r in csv.DictReader(fh)]


def reference(tmp: Path, grid: Path) -> Path:
    """The same grid run by one uninterrupted worker."""
    root = tmp / "reference"
    create_queue(root, grid)
    p = worker(root, "ref", ["--lease-ttl", "600", "--heartbeat", "5"], tmp / "reference.log")
    if p.wait() != 0:
        raise RuntimeError("reference run failed; see " + str(tmp / "reference.log"))
    return root


def committed_rounds(logs: list[Path]) -> dict[tuple[str, int], int]:
    """How many times each (item, round) was committed, from the workers' progress lines."""
    pat = re.compile(r"^\s+(\S+) round (\d+)/\d+ ")
    seen: dict[tuple[str, int], int] = {}
    for log in logs:
        if log.exists():
            for line in log.read_text(errors="replace").splitlines():
                m = pat.match(line)
                if m:
                    key = (m[1], int(m[2]))
                    seen[key] = seen.get(key, 0) + 1
    return seen


def check_results(report: Report, label: str, roots: list[Path], ref: Path, items: list[str], rounds: int) -> None:
    """Every item done once, every round once, equal to the reference: in every root."""
    done = lost = repeated = equal = extra = 0
    for root in roots:
        results = root / "paper_results"
        for item in items:
            path = results / f"{item}.csv"
            if not path.exists():
                lost += 1
                continue
            done += 1
            rs = rows_of(path)
            if [int(r["round"]) for r in rs] != list(range(1, rounds + 1)):
                repeated += 1
            if rs == rows_of(ref / "paper_results" / f"{item}.csv"):
                equal += 1
        extra += sum(1 for p in results.glob("*.csv") if p.stem not in items)  # conflicted copies of results
    n = len(items) * len(roots)
    report.add(f"{label}: items done / items in grid", f"{done}/{n}", "100 %", done == n)
    report.add(f"{label}: items lost", lost, "0", lost == 0)
    report.add(f"{label}: items with more than one accepted result", extra, "0", extra == 0)
    report.add(f"{label}: CSVs with a missing or repeated round", repeated, "0", repeated == 0)
    report.add(f"{label}: final metrics equal to the uninterrupted reference", f"{equal}/{n}", "100 %", equal == n)


# --------------------------------------------------------------------------- scenario 1: chaos
def scenario_chaos(tmp: Path, seed: int, quick: bool, report: Report) -> None:
    rng = random.Random(seed)
    rounds = 6
    grid = write_grid(tmp / "chaos.toml", methods=["fedavg", "fedspec"], alphas=[0.1, 0.5] if quick else [0.1, 0.3, 0.5, 1.0, 2.0, 5.0],
                      seeds=[seed] if quick else [seed, seed + 1], rounds=rounds)
    ref = reference(tmp, grid)
    root = tmp / "chaos"
    create_queue(root, grid)
    items = [i["id"] for i in status(root)["items"]]
    ttl, hb, settle, poll = 3.0, 0.5, 0.0, 0.3
    args = ["--wait", "--lease-ttl", str(ttl), "--heartbeat", str(hb), "--settle", str(settle), "--poll", str(poll)]
    names = [f"chaos{k}" for k in range(4)]
    logs = {n: tmp / f"{n}.log" for n in names}
    procs = {n: worker(root, n, args, logs[n]) for n in names}
    kills: list[tuple[float, str, int]] = []  # (time, item, generation held)
    deadline = time.time() + (300 if quick else 900)
    t_start = time.time()
    while time.time() < deadline:
        time.sleep(rng.uniform(1.0, 3.0))
        st = status(root)
        if st["counts"].get("done") == len(items):
            break
        victim = rng.choice(names)
        beat = json.loads((root / "distributed_work" / "heartbeats" / f"{victim}.json").read_text() or "{}") \
            if (root / "distributed_work" / "heartbeats" / f"{victim}.json").exists() else {}
        os.killpg(procs[victim].pid, signal.SIGKILL)
        procs[victim].wait()
        if beat.get("item"):
            kills.append((time.time(), beat["item"], int(beat.get("generation") or 0)))
        else:
            kills.append((time.time(), "", 0))
        procs[victim] = worker(root, victim, args, logs[victim])
    for p in procs.values():
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
    elapsed = time.time() - t_start
    check_results(report, "chaos", [root], ref, items, rounds)
    counts = committed_rounds(list(logs.values()))
    redone = sum(c - 1 for c in counts.values() if c > 1)
    mid_item = [k for k in kills if k[1]]
    report.add("chaos: kill -9 (mid-item / total)", f"{len(mid_item)}/{len(kills)} in {elapsed:.0f} s", "-", None)
    per_kill = redone / max(1, len(mid_item))
    report.add("chaos: committed rounds redone per kill (+ the round in flight)", f"{per_kill:.2f}", "<= 1 round lost per kill",
               redone == 0)
    # kill -> resume: when did a higher generation of the killed item get claimed?
    delays = []
    for t_kill, item, gen in mid_item:
        folder = root / "distributed_work" / "claims" / item
        times = [p.stat().st_mtime for p in folder.glob("g*.claim.json") if int(p.name[1:6]) > gen]
        done_csv = root / "paper_results" / f"{item}.csv"
        if times:
            delays.append(min(times) - t_kill)
        elif done_csv.exists() and done_csv.stat().st_mtime < t_kill:
            continue  # it had finished just before the kill
    worst = max(delays) if delays else 0.0
    # With every worker busy, an item waits for a free worker (or the victim's restart): context, not a target.
    report.add("chaos: time from kill to resume, all workers busy (worst)", f"{worst:.1f} s over {len(delays)} kills", "-", None)


# --------------------------------------------------------------------------- scenario 2: sleepers
def scenario_sleepers(tmp: Path, seed: int, quick: bool, report: Report) -> None:
    rounds = 600  # ~40 ms each on 2 cores: the sleeper must still be mid-item when it is stopped
    grid = write_grid(tmp / "sleep.toml", methods=["fedspec"], alphas=[0.5], seeds=[seed], rounds=rounds, clients=10)
    ref = reference(tmp, grid)
    root = tmp / "sleepers"
    create_queue(root, grid)
    (item,) = [i["id"] for i in status(root)["items"]]
    ckpt_folder = root / "checkpoints_distributed" / item
    ttl = 2.0
    args = ["--lease-ttl", str(ttl), "--heartbeat", "0.4", "--settle", "0", "--poll", "0.3"]
    commits: list[tuple[float, str, int]] = []
    stop = threading.Event()

    def watch() -> None:
        last = None
        while not stop.is_set():
            try:
                m = read_header(ckpt_folder)
                key = (m.get("writer"), m.get("round")) if m else last
                if key != last:
                    commits.append((time.time(), *key))
                    last = key
            except CheckpointError:
                pass
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    sleeper = worker(root, "a-sleeper", args, tmp / "sleeper.log")
    wait_until(lambda: commits and commits[-1][2] >= 3, "the sleeper's third round")
    peer = worker(root, "b-peer", [*args, "--wait"], tmp / "peer.log")  # idle: the only item is held
    wait_for_idle_peer(tmp / "peer.log", lambda: commits[-1][2] if commits else 0, rounds)
    os.killpg(sleeper.pid, signal.SIGSTOP)
    t_stop = time.time()
    claims = root / "distributed_work" / "claims" / item
    wait_until(lambda: list(claims.glob("g00002.*.claim.json")), "the peer's reclaim")
    t_reclaim = time.time()
    wait_until(lambda: commits and commits[-1][1] == "b-peer" and commits[-1][2] >= commits[0][2] + 5, "the peer's progress")
    os.killpg(sleeper.pid, signal.SIGCONT)
    sleeper.wait(timeout=120)
    peer.wait(timeout=300)
    stop.set()
    watcher.join()
    late = [c for c in commits if c[1] == "a-sleeper" and c[0] > t_reclaim]
    bound = ttl + 0.4 + 0 + 0.3 + 0.5  # TTL + heartbeat + settle + poll + one claim
    report.add("sleepers: SIGSTOP to reclaim by an idle peer", f"{t_reclaim - t_stop:.1f} s",
               f"<= TTL+heartbeat+settle+poll = {bound:.1f} s", t_reclaim - t_stop <= bound)
    report.add("sleepers: commits accepted from the fenced-off sleeper", len(late), "0", not late)
    fenced = "lease-lost" in (tmp / "sleeper.log").read_text()
    report.add("sleepers: sleeper saw the new holder and stopped", "yes" if fenced else "no", "yes", fenced)
    check_results(report, "sleepers", [root], ref, [item], rounds)


# --------------------------------------------------------------------------- scenario 3: sync folder
def scenario_sync(tmp: Path, seed: int, quick: bool, report: Report) -> None:
    rounds = 4
    max_delay = 3.0 if quick else 10.0
    grid = write_grid(tmp / "sync.toml", methods=["fedavg", "fedspec"], alphas=[0.1, 0.5, 1.0], seeds=[seed], rounds=rounds)
    # A second machine adds a grid with one more item before the two have synced: work_queue.json
    # then changes on both sides, the syncer makes conflicted copies, and workers must merge them.
    grid_plus = write_grid(tmp / "sync_plus.toml", methods=["fedavg", "fedspec"], alphas=[0.1, 0.5, 1.0], seeds=[seed],
                           rounds=rounds, centralized=True)
    ref = reference(tmp, grid_plus)
    replicas = [tmp / f"replica{k}" for k in range(3)]
    for r in replicas:
        r.mkdir()
    create_queue(replicas[0], grid)
    create_queue(replicas[2], grid_plus)
    items = [i["id"] for i in status(ref)["items"]]
    stats_file = tmp / "syncsim.json"
    syncer = subprocess.Popen([PY, "-m", "fedspec.testing.syncsim", "--max-delay", str(max_delay), "--seed", str(seed),
                               "--naming", "mixed", "--placeholder-rate", "0.01", "--stats", str(stats_file),
                               *map(str, replicas)], env=ENV, stdout=subprocess.DEVNULL)
    for r in replicas[1:]:
        wait_until(lambda: (r / "distributed_work" / "work_queue.json").exists(), "the queue to reach every replica", 60)
    faketime = shutil.which("faketime")
    skews = ["+5m", "-5m", "+0m"]
    args = ["--wait", "--settle", str(max_delay + 2), "--lease-ttl", str(6 * max_delay + 10), "--heartbeat", "1", "--poll", "1"]
    logs = [tmp / f"sync{k}.log" for k in range(3)]
    procs = [worker(r, f"sync{k}", args, logs[k], prefix=[faketime, "-f", skews[k]] if faketime else None)
             for k, r in enumerate(replicas)]
    t0 = time.time()
    for p in procs:
        p.wait(timeout=1800)
    elapsed = time.time() - t0
    time.sleep(max_delay + 1)
    syncer.send_signal(signal.SIGTERM)
    syncer.wait(timeout=120)
    stats = json.loads(stats_file.read_text())
    check_results(report, "sync", replicas, ref, items, rounds)
    merged = sum(log.read_text().count("conflicted copy merged") for log in logs)
    report.add("sync: conflicted copies of the queue merged by workers", merged, ">= 1", merged >= 1)
    counts = committed_rounds(logs)
    executed = sum(counts.values())
    needed = len(items) * rounds
    dup = executed / needed - 1
    report.add("sync: duplicated rounds overall", f"{100 * dup:.1f} % ({executed} run for {needed})", "<= 5 %", dup <= 0.05)
    report.add("sync: syncer", f"{elapsed:.0f} s; delay 0-{max_delay:.0f} s; {stats['conflicts']} conflicted copies, "
               f"{stats['placeholders']} placeholders, {stats['stale']} out-of-order drops; clocks "
               f"{'skewed +5/-5/0 min' if faketime else 'not skewed (faketime missing)'}", "-", None)


# --------------------------------------------------------------------------- scenario 4: bad input
def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and "/heartbeats/" not in f"/{rel}" and not rel.endswith(".lock"):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _rewrite_header(path: Path, **change: object) -> None:
    """Change fields of a checkpoint's fedspec header in place, keeping its tensors (a forged or foreign file)."""
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    header["__metadata__"]["fedspec"] = json.dumps({**json.loads(header["__metadata__"]["fedspec"]), **change})
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + blob[8 + n :])


def _clear_line(res: subprocess.CompletedProcess) -> bool:
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    return res.returncode != 0 and len(lines) == 1 and "Traceback" not in res.stderr + res.stdout


def scenario_bad_input(tmp: Path, seed: int, quick: bool, report: Report) -> None:
    base = tmp / "bad"
    good_grid = write_grid(tmp / "good.toml", methods=["fedavg"], alphas=[0.5], seeds=[seed], rounds=2)
    create_queue(base, good_grid)
    subprocess.run([*FEDSPEC, "worker", "--root", str(base), "--name", "w"], capture_output=True, env=ENV, check=True)
    item = "fedavg_dirichlet_alpha0.5"
    cases: list[tuple[str, Path, list[str], str | None]] = []  # (name, root, args, expect "plots-note" etc.)

    def case_root(name: str) -> Path:
        root = tmp / f"bad-{name}"
        shutil.copytree(base, root)
        return root

    for name, content in (("empty", b""), ("truncated", b'{"format": 1, "items": [{"id": "a"'), ("non-JSON", b"\x00garbage")):
        root = case_root(f"queue-{name}")
        (root / "distributed_work" / "work_queue.json").write_bytes(content)
        cases.append((f"{name} work_queue.json (worker)", root, ["worker", "--root", str(root)], None))
        cases.append((f"{name} work_queue.json (status)", root, ["status", "--root", str(root)], None))
    for name, text in (("unknown key", "[grid]\nmethod = ['fedavg']\n"), ("wrong type", "[experiment]\nrounds = 'ten'\n"),
                       ("unknown method", "[grid]\nmethods = ['fedprox']\n"), ("unknown task", "[grid]\ntask = 'mnist'\n"),
                       ("not TOML", "[grid\n")):
        g = tmp / f"grid-{name.replace(' ', '-')}.toml"
        g.write_text(text)
        root = case_root(f"grid-{name.replace(' ', '-')}")
        cases.append((f"grid file: {name}", root, ["worker", "--root", str(root), "--grid", str(g)], None))
    run_args = ["run", "--method", "fedavg", "--clients", "5", "--rounds", "3", "--min-client-size", "5", "--seed", str(seed),
                "--name", item]
    root = case_root("ckpt-truncated")
    ckpt = root / "checkpoints_distributed" / item / CHECKPOINT
    ckpt.write_bytes(ckpt.read_bytes()[:40])
    (root / "paper_results" / f"{item}.csv").unlink()
    cases.append(("truncated checkpoint (run)", root, [*run_args, "--root", str(root)], None))
    root = case_root("ckpt-foreign")
    _rewrite_header(root / "checkpoints_distributed" / item / CHECKPOINT, item_id="x", spec_hash="y")
    (root / "paper_results" / f"{item}.csv").unlink()
    cases.append(("foreign checkpoint (run)", root, [*run_args, "--root", str(root)], None))
    root = case_root("csv-edited")
    (root / "paper_results" / "hand_edited.csv").write_text("my notes\n1,2,3\n\"unclosed\n")
    cases.append(("results CSV edited by hand (plots)", root, ["plots", "--root", str(root)], "note"))
    root = tmp / "bad-not-a-root"
    root.mkdir()
    (root / "holiday.jpg").write_bytes(b"\xff\xd8")
    cases.append(("root that is not a fedspec root (worker)", root, ["worker", "--root", str(root)], None))
    cases.append(("root that is not a fedspec root (status)", root, ["status", "--root", str(root)], None))
    mounts: list[Path] = []
    ro = tmp / "bad-readonly"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode == 0:
        mounts.append(ro)
        cases.append(("read-only root (read-only tmpfs)", ro, ["worker", "--root", str(ro), "--grid", str(good_grid)], None))
    full = tmp / "bad-full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], capture_output=True).returncode == 0:
        mounts.append(full)
        (full / "filler").write_bytes(b"\0" * 60_000)
        cases.append(("full disk (64 KiB tmpfs)", full, [*run_args, "--root", str(full)], None))
    handled = tracebacks = 0
    failures = []
    for name, root, args, expect in cases:
        before = _snapshot(root)
        res = subprocess.run([*FEDSPEC, *args], capture_output=True, text=True, env=ENV, timeout=300)
        after = _snapshot(root)
        unchanged = all(after.get(k) == v for k, v in before.items())  # nothing overwritten or lost
        if expect == "note":
            ok = res.returncode == 0 and "hand_edited.csv" in res.stderr and "Traceback" not in res.stderr and unchanged
        else:
            ok = _clear_line(res) and unchanged
        handled += ok
        tracebacks += "Traceback" in res.stderr + res.stdout
        if not ok:
            failures.append(f"{name}: rc={res.returncode} {res.stderr.strip().splitlines()[-1:] if res.stderr else ''}")
    for m in mounts:
        subprocess.run(["umount", str(m)], capture_output=True)
    report.add("bad input: tried / handled with one clear line, nothing overwritten", f"{handled}/{len(cases)}", "all",
               handled == len(cases))
    for f in failures:
        report.add("  not handled", f, "-", None)
    report.add("bad input: tracebacks shown to the user", tracebacks, "0", tracebacks == 0)


# --------------------------------------------------------------------------- scenario 5: security
class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def scenario_security(tmp: Path, seed: int, quick: bool, report: Report) -> None:
    root = tmp / "sec"
    item = "fedavg_dirichlet_alpha0.5"
    args = ["run", "--method", "fedavg", "--clients", "5", "--rounds", "3", "--min-client-size", "5", "--seed", str(seed),
            "--name", item, "--root", str(root)]
    subprocess.run([*FEDSPEC, *args[:-4], "--rounds", "3", "--name", item, "--root", str(root)], capture_output=True, env=ENV)
    (root / "paper_results" / f"{item}.csv").unlink()
    folder = root / "checkpoints_distributed" / item
    blob = (folder / CHECKPOINT).read_bytes()
    header = blob[: 8 + int.from_bytes(blob[:8], "little")]  # a valid fedspec header, kept in front of each payload
    marker = tmp / "code-was-executed"
    executed = 0
    attempts = 0
    for variant in ("pickle", "torch.save"):
        blob = pickle.dumps(_Payload(str(marker)))
        if variant == "torch.save":
            import io

            import torch

            buf = io.BytesIO()
            torch.save({"x": _Payload(str(marker))}, buf)
            blob = buf.getvalue()
        (folder / CHECKPOINT).write_bytes(header + blob)
        res = subprocess.run([*FEDSPEC, *args], capture_output=True, text=True, env=ENV)
        attempts += 1
        executed += marker.exists()
        report.add(f"security: malicious {variant} checkpoint refused with one line", "yes" if _clear_line(res) else "no",
                   "yes", _clear_line(res))
    report.add("security: code executed from a malicious checkpoint", f"{executed} of {attempts}", "never", executed == 0)
    # Names that try to leave the root.
    outside = tmp / "escaped"
    q = tmp / "sec-queue"
    (q / "distributed_work").mkdir(parents=True)
    (q / "distributed_work" / "work_queue.json").write_text(json.dumps(
        {"format": 1, "items": [{"id": "../../escaped", "spec": {"task": "digits"}}, {"id": "a/b", "spec": {}}]}))
    bad = [
        ("item id with ../ in the queue", [*FEDSPEC, "worker", "--root", str(q)]),
        ("worker name with ../", [*FEDSPEC, "status", "--root", str(q)]),
        ("worker --name ../x", [*FEDSPEC, "worker", "--root", str(root), "--name", "../x"]),
        ("worker --name a/b", [*FEDSPEC, "worker", "--root", str(root), "--name", "a/b"]),
        ("run --name ../../x", [*FEDSPEC, "run", "--root", str(root), "--name", "../../x", "--rounds", "1"]),
    ]
    refused = 0
    for name, cmd in bad:
        res = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
        refused += _clear_line(res)
    escaped = outside.exists() or any(p.exists() for p in (tmp / "x", tmp.parent / "x"))
    report.add("security: path-escaping ids and names refused", f"{refused}/{len(bad)}", "all", refused == len(bad))
    report.add("security: files written outside the root", "yes" if escaped else "none", "none", not escaped)


def scenario_takeover(tmp: Path, seed: int, quick: bool, report: Report) -> None:
    """kill -9 of a holder while a peer idles: time until the peer resumes, rounds lost."""
    rounds = 600  # ~40 ms each on 2 cores: the holder must still be mid-item when it is killed
    grid = write_grid(tmp / "take.toml", methods=["fedspec"], alphas=[0.5], seeds=[seed], rounds=rounds, clients=10)
    root = tmp / "takeover"
    create_queue(root, grid)
    (item,) = [i["id"] for i in status(root)["items"]]
    ttl, hb, settle, poll = 2.0, 0.4, 0.0, 0.3
    args = ["--lease-ttl", str(ttl), "--heartbeat", str(hb), "--settle", str(settle), "--poll", str(poll)]
    ckpt_folder = root / "checkpoints_distributed" / item

    def ckpt_round() -> int:
        try:
            meta = read_header(ckpt_folder)
        except CheckpointError:
            return 0
        return meta["round"] if meta else 0

    holder = worker(root, "a-holder", args, tmp / "holder.log")
    wait_until(lambda: ckpt_round() >= 3, "the holder's third round")
    peer = worker(root, "b-peer", [*args, "--wait"], tmp / "peer.log")
    wait_for_idle_peer(tmp / "peer.log", ckpt_round, rounds)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    t_kill, at_kill = time.time(), ckpt_round()
    claims = root / "distributed_work" / "claims" / item
    wait_until(lambda: list(claims.glob("g00002.*.claim.json")), "the peer's reclaim")
    t_resume = time.time()
    peer.wait(timeout=300)
    counts = committed_rounds([tmp / "holder.log", tmp / "peer.log"])
    redone = sum(c - 1 for c in counts.values() if c > 1)
    bound = ttl + hb + settle + poll + 0.5
    report.add("takeover: kill -9 to resume by an idle peer", f"{t_resume - t_kill:.1f} s (killed after round {at_kill})",
               f"<= TTL+heartbeat+settle+poll = {bound:.1f} s", t_resume - t_kill <= bound)
    report.add("takeover: rounds lost by the kill", f"{redone} committed round(s) redone, 1 in flight", "<= 1", redone == 0)


SCENARIOS = {"takeover": scenario_takeover, "chaos": scenario_chaos, "sleepers": scenario_sleepers, "sync": scenario_sync,
             "bad-input": scenario_bad_input, "security": scenario_security}


def run(scenarios: list[str], seed: int, quick: bool, keep: Path | None = None) -> Report:
    report = Report()
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="fedspec-chaos-", dir=keep))
    env_cache = tmp / "cache"
    ENV["FEDSPEC_CACHE"] = str(env_cache)
    ENV["FEDSPEC_HOME"] = str(tmp / "home")
    for name in scenarios:
        t0 = time.time()
        folder = tmp / name
        folder.mkdir()
        SCENARIOS[name](folder, seed, quick, report)
        report.add(f"{name}: scenario wall time", f"{time.time() - t0:.0f} s", "-", None)
    if keep is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="all", help=f"all or a comma-separated list of {', '.join(SCENARIOS)}")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smaller grids and delays (the test suite's version)")
    parser.add_argument("--keep", type=Path, help="keep the run's folders under this directory")
    args = parser.parse_args()
    names = list(SCENARIOS) if args.scenario == "all" else [s.strip() for s in args.scenario.split(",")]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"error: --scenario: unknown {', '.join(unknown)}; choose from all, {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    t0 = time.time()
    report = run(names, args.seed, args.quick, args.keep)
    sys.path.insert(0, str(REPO))
    from bench._util import table

    print(table([f.row() for f in report.figures], ("figure", "measured", "target", "")))
    missed = [f for f in report.figures if f.ok is False]
    print(f"seed {args.seed}, {time.time() - t0:.0f} s, {len(missed)} target(s) missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
