"""``fedspec run``: train one experiment in the foreground, resuming from its checkpoint."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fedspec.checkpoint_file import read_header
from fedspec.cli.common import console, out, round_line, setup_logging, writable_root
from fedspec.config import ExperimentSpec, check_item_id, make_spec, spec_changes
from fedspec.errors import ConfigError, StorageError, folder_failure
from fedspec.fl.partition import check_splittable
from fedspec.queue.store import RootPaths
from fedspec.queue.workqueue import load_queue


class Terminated(BaseException):
    """SIGTERM arrived while training (a BaseException, like KeyboardInterrupt: no ``except Exception`` may swallow it)."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated


class RunDisplay:
    """How ``fedspec run`` shows its progress: a live bar on a terminal, one line per round anywhere else.

    Piped or redirected to a log (``nohup fedspec run > run.log``), a live bar
    is drawn only once, when the run ends: ``tail -f`` of a BERT run's log
    showed nothing for hours.
    """

    def __init__(self, item_id: str, rounds: int) -> None:
        self.item_id, self.rounds = item_id, rounds
        self.committed = 0  # the last round checkpointed, as far as this run has seen
        self.progress: Progress | None = None
        if console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
            )
            self.bar = self.progress.add_task(item_id, total=rounds, info="loading task…")

    def __enter__(self) -> "RunDisplay":
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()

    def on_start(self, done: int, total: int) -> None:
        self.committed = done
        if self.progress is not None:
            self.progress.update(self.bar, completed=done, info=f"resumed after round {done}" if done else "training…")
        else:
            what = f"resuming after round {done}/{total} from its checkpoint" if done else f"{total} round{'s' if total != 1 else ''} to train"
            console.print(escape(f"{self.item_id}: {what}"), highlight=False)

    def on_step(self, rnd: int, done: int, total: int) -> None:
        """Within a round (a text round takes minutes): the bar moves, short of the next whole round (evaluation is to come)."""
        if self.progress is not None:
            self.progress.update(self.bar, completed=rnd - 1 + min(0.99, done / total if total > 0 else 0.0))

    def on_round(self, row: dict) -> None:
        self.committed = row["round"]  # called once the round's checkpoint is committed
        if self.progress is not None:
            self.progress.update(self.bar, completed=row["round"],
                                 info=f"acc {row['test_accuracy']:.4f}  rank {row['rank']}  {row['round_seconds']:.2f}s/round")
        else:  # as the worker's lines
            console.print(escape(round_line(self.item_id, self.rounds, row)), highlight=False)


def _refuse_a_taken_name(paths: RootPaths, item_id: str, spec: ExperimentSpec) -> None:
    """Refuse to train under the name of a queue item of other settings (a worker would count this run's CSV as that
    item's), or under a name that differs in case only from a queued item's or from a result's or checkpoint's in the
    root: macOS and Windows take those for the same file."""
    items = load_queue(paths) if paths.queue_file.exists() else []
    twin = next((i.id for i in items if i.id != item_id and i.id.lower() == item_id.lower()), None)
    if twin is not None:
        raise ConfigError(f"--name {item_id!r}: queued item {twin!r} differs from it in case only, which macOS and "
                          f"Windows do not tell apart: pass --name {twin} (with that item's settings), or another name")
    held = paths.files_in_other_case([item_id]).get(item_id)
    if held:
        raise ConfigError(f"--name {item_id!r}: {paths.root} holds {' and '.join(held)}, which macOS and Windows take for "
                          f"this name's (they differ in case only): pass --name {Path(held[0]).name.removesuffix('.csv')} "
                          "to go on with them, or another name")
    queued = next((i for i in items if i.id == item_id), None)
    if queued is None:
        return
    theirs = make_spec(f"{paths.queue_file} item {item_id}", **queued.spec).hashed_fields()
    if theirs != spec.hashed_fields():
        raise ConfigError(f"{paths.queue_file}: item {item_id!r} is queued with other settings "
                          f"({spec_changes(theirs, spec.hashed_fields())}), and a worker would take this run's result "
                          "for that item's: pass another --name, or another --root")


def run(
    task: str = typer.Option("digits", help="digits (offline, seconds), tweets-minilm (offline text), sst2-bert (paper)."),
    method: str = typer.Option("fedspec", help="fedavg, fedspec, or centralized (pooled-data baseline)."),
    partition: str = typer.Option("dirichlet", help="iid, or dirichlet (label skew)."),
    alpha: float = typer.Option(0.5, help="Dirichlet concentration; smaller is more non-IID."),
    clients: int = typer.Option(10, help="Number of clients the training data is split among."),
    client_fraction: float = typer.Option(1.0, help="Share of clients sampled each round, in (0, 1]."),
    rounds: int = typer.Option(20, help="Federated rounds (epochs for centralized)."),
    local_epochs: int = typer.Option(1, help="Local epochs per client per round."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size; default depends on task and device."),
    optimizer: str = typer.Option("adamw", help="sgd (momentum 0.9), adam or adamw; fresh each round."),
    lr: Optional[float] = typer.Option(None, help="Learning rate; default depends on the task."),
    rank: int = typer.Option(4, help="Initial LoRA rank."),
    max_rank: int = typer.Option(16, help="Largest rank FedSpec may grow to (never past min(d_out, d_in) of the widest adapted layer)."),
    rank_step: int = typer.Option(2, help="How much FedSpec grows the rank at a time."),
    tail_threshold: float = typer.Option(0.005, help="FedSpec grows the rank when the left-out energy share exceeds this."),
    lora_alpha: float = typer.Option(8.0, help="LoRA scaling is lora_alpha / rank, fixed for the run."),
    min_client_size: int = typer.Option(10, help="Smallest number of samples a Dirichlet client may get."),
    grad_clip: Optional[float] = typer.Option(1.0, help="Max gradient norm (0 disables)."),
    client_retries: int = typer.Option(1, help="Retries of a failing client before it is skipped for the round."),
    max_train_samples: Optional[int] = typer.Option(None, help="Train on a fixed subset of this many samples."),
    group_by_length: bool = typer.Option(True, help="Text tasks: batch tweets/sentences of similar length together (less padding)."),
    parallel_clients: str = typer.Option("auto", help="Train a round's clients together with vmap: auto (small fixed-size models), on, off."),
    seed: int = typer.Option(42, help="Seed of the partition, client sampling and training."),
    device: str = typer.Option("auto", help="auto (cuda > mps > cpu), cpu, cuda or mps."),
    root: Path = typer.Option(Path("."), help="Root folder: results go to ROOT/paper_results, checkpoints to ROOT/checkpoints_distributed; created if missing, its parent must exist."),
    name: Optional[str] = typer.Option(None, help="Item name (default e.g. fedspec_dirichlet_alpha0.5)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log resumes, client faults, OOM retries."),
) -> None:
    """Train one experiment, checkpointing every round; re-running the same command resumes it.

    Writes ROOT/paper_results/NAME.csv (one row per round) and keeps the last
    round in ROOT/checkpoints_distributed/NAME/.  A finished item is not run
    again: delete its CSV and its checkpoint folder to redo it from round 1.
    In a root with a queue, NAME may be a queued item's only with its settings
    (a worker would count the CSV as that item's result).
    Ctrl-C or SIGTERM stops at once and says which round is checkpointed; only
    the round in flight is lost (exit 130/143).
    """
    setup_logging(verbose)
    spec = make_spec(
        task=task, method=method, partition=partition, alpha=alpha, clients=clients, client_fraction=client_fraction,
        rounds=rounds, local_epochs=local_epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, rank=rank,
        max_rank=max_rank, rank_step=rank_step, tail_threshold=tail_threshold, lora_alpha=lora_alpha,
        min_client_size=min_client_size, grad_clip=grad_clip or None, client_retries=client_retries,
        max_train_samples=max_train_samples, group_by_length=group_by_length, parallel_clients=parallel_clients, seed=seed, device=device,
    )
    item_id = check_item_id(spec.item_id() if name is None else name, "--name")  # --name "" is refused, not the default
    check_splittable("fedspec run", [(item_id, spec)])  # before the root is made: too many clients leaves nothing behind
    root = writable_root(root)
    _refuse_a_taken_name(RootPaths(root), item_id, spec)

    from fedspec.fl.loop import checkpoint_dir, run_experiment  # torch is imported only when training

    with RunDisplay(item_id, spec.rounds) as display:
        before = signal.signal(signal.SIGTERM, _terminated)  # `kill`, a job scheduler, `docker stop`: as Ctrl-C
        try:
            outcome = run_experiment(spec, item_id, root, on_round=display.on_round, on_start=display.on_start,
                                     on_step=display.on_step)
        except (KeyboardInterrupt, Terminated) as stop:
            display.stop()
            header = read_header(checkpoint_dir(root, item_id))  # what is on disk, whatever the bar last showed
            done = header["round"] if header else 0
            out.print(f"{item_id}: {'terminated' if isinstance(stop, Terminated) else 'interrupted'}; round {done} of "
                      f"{spec.rounds} is checkpointed, run the same command to resume")
            raise typer.Exit(143 if isinstance(stop, Terminated) else 130) from None
        except OSError as err:  # the disk or the share under ROOT (full, read-only, dropped): not read again here
            display.stop()
            failure = folder_failure(err, root)
            resume = (f"{failure.advice}, then run the same command to resume" if failure.advice
                      else "run the same command to resume once that is fixed")
            raise StorageError(f"{failure.cause}; {item_id} stopped with round {display.committed} of {spec.rounds} "
                               f"checkpointed: {resume}") from None
        finally:
            signal.signal(signal.SIGTERM, before)
    rows = outcome.rows
    if outcome.status == "duplicate" or not rows:
        out.print(escape(f"{item_id}: already done, {outcome.csv_path} exists "
                         f"(to run it again from round 1, delete it and {checkpoint_dir(root, item_id)})"))
        return
    best = max(r["test_accuracy"] for r in rows)
    new = [r for r in rows if r["round"] > outcome.resumed_from]
    secs = sum(r["round_seconds"] for r in new) / max(1, len(new))
    resumed = f", resumed after round {outcome.resumed_from}" if outcome.resumed_from else ""
    out.print(escape(
        f"{item_id}: {len(rows)} round{'s' if len(rows) != 1 else ''} on {rows[-1]['device']}{resumed}; final accuracy {rows[-1]['test_accuracy']:.4f} "
        f"(best {best:.4f}), rank {rows[-1]['rank']}, {secs:.2f} s/round -> {outcome.csv_path}"
    ))
