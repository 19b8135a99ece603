"""Experiment and grid settings: pydantic models and TOML loading.

This module imports no torch, so that ``fedspec status`` and the queue stay
instant.  Every invalid value becomes a :class:`~fedspec.errors.ConfigError`
whose message is one line naming the file, the field and what is allowed.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any, Collection, Iterable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedspec import __version__
from fedspec.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

Task = Literal["digits", "tweets-minilm", "sst2-bert"]
Method = Literal["fedavg", "fedspec", "centralized"]
Partition = Literal["iid", "dirichlet"]
Device = Literal["auto", "cpu", "cuda", "mps"]
Optimizer = Literal["sgd", "adam", "adamw"]

# Learning rates that work for each task when none is given.
DEFAULT_LR: dict[str, float] = {"digits": 5e-3, "tweets-minilm": 1e-3, "sst2-bert": 5e-4}

# Fields that do not change what an item computes; left out of the spec hash so
# that an item may be resumed on another device.
_NOT_HASHED = {"device"}

ITEM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Names Windows keeps for devices, whatever the case or extension (``aux.csv`` opens the AUX device),
# and which a share seen from a Windows machine therefore cannot hold.
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{k}" for k in range(1, 10)), *(f"LPT{k}" for k in range(1, 10))}


def unportable(name: str) -> str | None:
    """Why ``name`` cannot be a file or folder name on every machine of a grid (Windows' rules), or None."""
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        return "a device name on Windows"
    if name.endswith("."):
        return "Windows drops a name's final '.'"
    return None


def item_id_problem(item_id: str) -> str | None:
    """Why ``item_id`` cannot name an item's files, or None for a name that stays inside the root (no separators,
    no ``..``), means nothing to sync clients and means the same file on every machine."""
    if not ITEM_ID_RE.match(item_id) or ".." in item_id:
        return "letters, digits, '.', '_', '-'; no '..'"
    return unportable(item_id)


class ExperimentSpec(BaseModel):
    """Everything that defines one experiment (one item of a grid).

    Two specs with the same :meth:`spec_hash` produce the same CSV on the same
    device type.  A setting added later must default to the behaviour before
    it: the specs that earlier fedspecs queued and checkpointed leave it out,
    and mean its default (:func:`with_defaults`).
    """

    # TOML and the command line both read inf and nan as floats; no setting means anything with them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    task: Task = "digits"
    method: Method = "fedspec"
    partition: Partition = "dirichlet"
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration; smaller is more non-IID")
    seed: int = Field(42, ge=0)
    clients: int = Field(10, ge=1, le=10_000)
    client_fraction: float = Field(1.0, gt=0, le=1, description="share of clients sampled per round")
    rounds: int = Field(20, ge=1, le=100_000, description="federated rounds (epochs for centralized)")
    local_epochs: int = Field(1, ge=1, le=1000)
    batch_size: Optional[int] = Field(None, ge=1, le=65_536, description="None: per-device default")
    optimizer: Optimizer = "adamw"
    lr: Optional[float] = Field(None, gt=0, le=10, description="None: per-task default")
    rank: int = Field(4, ge=1, le=1024, description="initial LoRA rank")
    max_rank: int = Field(16, ge=1, le=1024, description="largest rank FedSpec may grow to")
    rank_step: int = Field(2, ge=1, le=1024)
    tail_threshold: float = Field(0.005, ge=0, le=1, description="tail energy ratio that grows the rank")
    lora_alpha: float = Field(8.0, gt=0, description="LoRA scaling is lora_alpha / rank, fixed for the run")
    min_client_size: int = Field(10, ge=1)
    grad_clip: Optional[float] = Field(1.0, gt=0, description="max gradient norm; None disables")
    client_retries: int = Field(1, ge=0, le=10, description="retries of a failing client before it is skipped")
    max_train_samples: Optional[int] = Field(None, ge=1, description="use a subset of the training data")
    group_by_length: bool = Field(
        True, description="text tasks: batch sequences of similar length together (less padding; digits ignores it)")
    parallel_clients: Literal["auto", "on", "off"] = Field(
        "auto", description="train a round's clients together with vmap (auto: small models on fixed-size inputs)")
    device: Device = "auto"

    @model_validator(mode="after")
    def _check_ranks(self) -> "ExperimentSpec":
        if self.max_rank < self.rank:
            raise ValueError(f"max_rank ({self.max_rank}) must be >= rank ({self.rank})")
        return self

    @property
    def effective_max_rank(self) -> int:
        """Adapter width: FedSpec may grow to ``max_rank``; the other methods keep ``rank``."""
        return self.max_rank if self.method == "fedspec" else self.rank

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.task]

    def base_name(self) -> str:
        """Results name users know: ``fedspec_dirichlet_alpha0.5``, ``fedavg_iid``, ``centralized``."""
        if self.method == "centralized":
            return "centralized"
        if self.partition == "iid":
            return f"{self.method}_iid"
        return f"{self.method}_dirichlet_alpha{self.alpha!r}"

    def item_id(self, with_seed: bool = False) -> str:
        return f"{self.base_name()}_seed{self.seed}" if with_seed else self.base_name()

    def hashed_fields(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        for key in _NOT_HASHED:
            data.pop(key, None)
        return data

    def spec_hash(self) -> str:
        """Stable hash of every field that changes the result (device excluded)."""
        blob = json.dumps(self.hashed_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def spec_changes(old: dict[str, Any], new: dict[str, Any], most: int = 3) -> str:
    """``task 'digits' -> 'tweets-minilm', rounds 10 -> 20``: the first few fields that differ, the task first."""
    old, new = with_defaults(old), with_defaults(new)  # a setting an earlier fedspec's spec leaves out is at its default
    keys = sorted((k for k in old.keys() | new.keys() if old.get(k) != new.get(k)), key=lambda k: (k != "task", k))
    shown = [f"{k if k.isidentifier() else _short(k)} {_short(old.get(k))} -> {_short(new.get(k))}" for k in keys[:most]]
    return ", ".join(shown) + (f" and {len(keys) - most} more" if len(keys) > most else "")


def _short(value: Any, most: int = 40) -> str:
    """``repr`` cut to ``most`` characters: a hand-edited or foreign file's values stay one readable line."""
    text = repr(value)
    return text if len(text) <= most else text[: most - 1] + "…"


class GridSection(BaseModel):
    """The ``[grid]`` table: what to sweep."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    task: Task = "digits"
    methods: list[Literal["fedavg", "fedspec"]] = Field(default_factory=lambda: ["fedavg", "fedspec"], min_length=1)
    partitions: list[Partition] = Field(default_factory=lambda: ["dirichlet"], min_length=1)
    alphas: list[float] = Field(default_factory=lambda: [0.5], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1)
    centralized: bool = True

    @model_validator(mode="after")
    def _check(self) -> "GridSection":
        if any(a <= 0 for a in self.alphas):
            raise ValueError("every alpha must be > 0")
        for name, values in (("methods", self.methods), ("partitions", self.partitions),
                             ("alphas", self.alphas), ("seeds", self.seeds)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} has duplicates")
        return self


class GridFile(BaseModel):
    """A grid TOML file: ``[grid]`` (the sweep) and ``[experiment]`` (shared settings)."""

    model_config = ConfigDict(extra="forbid")

    grid: GridSection = Field(default_factory=GridSection)
    experiment: dict[str, Any] = Field(default_factory=dict)


# What a key of [experiment] is called in [grid], where it is swept.
GRID_KEYS = {"task": "task", "method": "methods", "partition": "partitions", "alpha": "alphas", "seed": "seeds"}
# Names other tools (Flower, Hugging Face) give some settings, which spelling alone would not suggest.
KNOWN_AS = {"learning_rate": "lr", "num_clients": "clients", "num_rounds": "rounds", "epochs": "local_epochs"}


def _unknown_key_hint(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """Where a key that its table does not know belongs, or the known key it is a misspelling of."""
    for part in loc[:-1]:  # down to the table that holds the key
        field = model.model_fields.get(str(part))
        table = field.annotation if field is not None else None
        if not (isinstance(table, type) and issubclass(table, BaseModel)):
            return ""
        model = table
    key = str(loc[-1])
    if model is GridSection and key in ExperimentSpec.model_fields and key not in GRID_KEYS:
        return "; it belongs under [experiment]"
    if model is ExperimentSpec and key in GridSection.model_fields:
        return "; it belongs under [grid]"
    if model is ExperimentSpec and key in KNOWN_AS:
        return f"; did you mean {KNOWN_AS[key]!r}?"
    return did_you_mean(key, model.model_fields)


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the known name closest to a mistyped ``word``, or nothing when none is close."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.7)
    return f"; did you mean {close[0]!r}?" if close else ""


COMMAND_LINE = "command line"
# Said where "centralized" is given as a method: the grid's baseline is a switch of its own.
CENTRALIZED_HINT = "the centralized baseline is `centralized = true` under [grid] (the default)"


def _format_validation_error(err: ValidationError, where: str, model: type[BaseModel], table: str = "",
                             in_table: Collection[str] = ()) -> str:
    """One line for the first problem of ``err``, located in ``where``.

    ``table`` names the TOML table that the keys ``in_table`` (and checks
    across settings) come from, for a model built from several tables.
    """
    first = err.errors()[0]
    parts = [str(p) for p in first["loc"]]
    if table and (not parts or parts[0] in in_table):
        parts.insert(0, table)
    msg = first["msg"].removeprefix("Value error, ")  # a validator's own sentence says it all
    if first["type"] == "extra_forbidden":
        msg = "unknown key" + _unknown_key_hint(model, tuple(first["loc"]))
    elif first["type"] == "literal_error":
        ctx = first.get("ctx", {})
        msg = f"got {first.get('input')!r}, allowed: {ctx.get('expected', '')}"
        if first.get("input") == "centralized" and "methods" in parts:  # a grid's baseline is a switch of its own
            msg += f"; {CENTRALIZED_HINT}"
    else:
        given = first.get("input")
        if not isinstance(given, (dict, list)) and given is not None:
            msg = f"{msg} (got {given!r})"
    more = len(err.errors()) - 1
    msg += f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    if where == COMMAND_LINE:  # `fedspec run`: the option, as typed
        return f"--{parts[0].replace('_', '-')}: {msg}" if parts else msg
    return f"{where}: {'.'.join(parts)}: {msg}" if parts else f"{where}: {msg}"


@functools.cache
def settings_digest() -> str:
    """What this fedspec takes as an item's settings (names, types, choices, bounds, defaults), in 12 hex digits.

    Queue items carry the digest of the fedspec that added them
    (:func:`origin`).  Machines of a grid update at different times: an item
    whose settings another fedspec added (a new setting, task or method) and
    this one does not take is then left to the machines that do, not failed.
    Built from the field declarations, not pydantic's JSON schema, which
    changes between pydantic versions on settings that do not.
    """
    fields = [(name, repr(f.annotation), repr(f.metadata), repr(f.default))
              for name, f in sorted(ExperimentSpec.model_fields.items())]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:12]


def origin() -> dict[str, str]:
    """The stamp on queue items this fedspec adds: ``{"fedspec": version, "settings": settings_digest()}``."""
    return {"fedspec": __version__, "settings": settings_digest()}


def spec_problem(spec: dict[str, Any], where: str) -> str | None:
    """One line on why this fedspec does not take ``spec`` (as :func:`make_spec` words it), or None."""
    try:
        ExperimentSpec.model_validate(spec)
    except ValidationError as err:
        return _format_validation_error(err, where, ExperimentSpec)
    return None


@functools.cache
def _defaults() -> dict[str, Any]:
    return ExperimentSpec().model_dump(mode="json")


def with_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with every setting it leaves out at this fedspec's default.

    A setting added in a later fedspec defaults to the behaviour before it,
    so an item queued or checkpointed by an earlier fedspec, whose spec does
    not name it, is the same experiment as today's spec with the default.
    """
    return {**_defaults(), **spec}


def without_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` less the settings at this fedspec's default: what a checkpoint records, so that an earlier fedspec,
    which does not know a setting added since, still reads the same settings there while it is at its default."""
    defaults = _defaults()
    return {k: v for k, v in spec.items() if k not in defaults or defaults[k] != v}


def make_spec(where: str = COMMAND_LINE, **values: Any) -> ExperimentSpec:
    """Build an :class:`ExperimentSpec`, turning validation errors into one-line ConfigErrors."""
    try:
        return ExperimentSpec(**values)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, where, ExperimentSpec)) from None


class GridItem(BaseModel):
    """One named item of an expanded grid."""

    model_config = ConfigDict(frozen=True)

    id: str
    spec: ExperimentSpec


def load_grid(path: Path | str) -> list[GridItem]:
    """Read a grid TOML file and expand it into named items.

    Raises
    ------
    ConfigError
        One line naming the file, the field and what is allowed.
    """
    path = Path(path)
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where}: grid file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: is a folder, expected a grid .toml file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not a text file (expected TOML)") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{where}: not valid TOML: {err}") from None
    if not raw:  # not the defaults' grid: a file saved empty, or not yet synced down
        raise ConfigError(f"{where}: the grid file is empty (expected a [grid] table, as in experiments/quick.toml)")
    try:
        grid_file = GridFile(**raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, where, GridFile)) from None
    return expand_grid(grid_file, where)


def expand_grid(grid_file: GridFile, where: str = "grid") -> list[GridItem]:
    """Expand methods × partitions × alphas × seeds (+ centralized per seed) into items."""
    g = grid_file.grid
    shared = dict(grid_file.experiment)
    for key, swept in GRID_KEYS.items():
        if key in shared:
            if key == "method" and shared[key] == "centralized":
                raise ConfigError(f"{where}: experiment.method: {CENTRALIZED_HINT}; `centralized = false` leaves it out")
            value = shared[key] if key == "task" else [shared[key]]
            raise ConfigError(f"{where}: experiment.{key}: set it in [grid] instead, as {swept} = {json.dumps(value, default=str)}")
    if "device" in shared:  # a worker trains every item on its own --device, and an item may resume on another machine
        raise ConfigError(f"{where}: experiment.device: a grid's items run on whichever machine claims them; "
                          "pass --device to `fedspec worker` on each machine instead")
    many_seeds = len(g.seeds) > 1
    items: list[GridItem] = []
    for seed, method, partition in itertools.product(g.seeds, g.methods, g.partitions):
        alphas = g.alphas if partition == "dirichlet" else [g.alphas[0]]
        for alpha in alphas:
            spec = _spec_in_grid(where, shared, task=g.task, method=method, partition=partition, alpha=alpha, seed=seed)
            items.append(GridItem(id=spec.item_id(many_seeds), spec=spec))
    if g.centralized:
        for seed in g.seeds:
            spec = _spec_in_grid(where, shared, task=g.task, method="centralized", partition="iid",
                                 alpha=g.alphas[0], seed=seed)
            items.append(GridItem(id=spec.item_id(many_seeds), spec=spec))
    return items


def _spec_in_grid(where: str, shared: dict[str, Any], **values: Any) -> ExperimentSpec:
    try:
        return ExperimentSpec(**shared, **values)
    except ValidationError as err:
        # Shared settings, and so checks across them (max_rank >= rank), come from [experiment]; the rest from [grid].
        raise ConfigError(_format_validation_error(err, where, ExperimentSpec, "experiment", shared)) from None


def check_item_id(item_id: str, where: str = "item id") -> str:
    """Refuse ids that could escape the root (``..``, separators), confuse sync clients, or that Windows cannot hold."""
    problem = item_id_problem(item_id)
    if problem:
        raise ConfigError(f"{where}: {item_id!r} is not a valid item id ({problem})")
    return item_id
