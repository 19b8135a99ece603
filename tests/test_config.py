"""Grid files: expansion, names, and one clear line for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedspec.config import check_item_id, load_grid, make_spec
from fedspec.errors import ConfigError
from tests.conftest import REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def test_quick_grid_expands_to_named_items() -> None:
    items = load_grid(REPO / "experiments" / "quick.toml")
    assert [i.id for i in items] == [
        "fedavg_dirichlet_alpha0.1", "fedavg_dirichlet_alpha0.5", "fedavg_dirichlet_alpha1.0",
        "fedspec_dirichlet_alpha0.1", "fedspec_dirichlet_alpha0.5", "fedspec_dirichlet_alpha1.0",
        "centralized",
    ]
    assert all(i.spec.rounds == 10 and i.spec.clients == 5 for i in items)


@pytest.mark.parametrize("name", ["quick.toml", "tweets.toml", "paper.toml"])
def test_shipped_grids_load(name: str) -> None:
    assert len(load_grid(REPO / "experiments" / name)) == 7


def test_several_seeds_append_seed_to_names(tmp_path: Path) -> None:
    items = load_grid(write(tmp_path, '[grid]\nmethods=["fedspec"]\nalphas=[0.5]\nseeds=[42, 43]\npartitions=["dirichlet","iid"]\n'))
    assert [i.id for i in items] == [
        "fedspec_dirichlet_alpha0.5_seed42", "fedspec_iid_seed42",
        "fedspec_dirichlet_alpha0.5_seed43", "fedspec_iid_seed43",
        "centralized_seed42", "centralized_seed43",
    ]


def test_spec_hash_ignores_device_only() -> None:
    assert make_spec(device="cpu").spec_hash() == make_spec(device="auto").spec_hash()
    assert make_spec(rounds=3).spec_hash() != make_spec(rounds=4).spec_hash()


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[grid]\nmethods=["fedprox"]\n', "grid.methods.0: got 'fedprox', allowed: 'fedavg' or 'fedspec'"),
        # The centralized baseline is not a method of the sweep: the error says where it is switched on.
        ('[grid]\nmethods=["fedavg", "centralized"]\n',
         "grid.methods.1: got 'centralized', allowed: 'fedavg' or 'fedspec'; the centralized baseline is `centralized = true` under [grid]"),
        ('[experiment]\nmethod="centralized"\n', "experiment.method: the centralized baseline is `centralized = true` under [grid]"),
        ('[grid]\ntask="mnist"\n', "grid.task: got 'mnist', allowed:"),
        ('[grid]\nalphas=["x"]\n', "grid.alphas.0: Input should be a valid number"),
        ('[grid]\nalpha=[0.5]\n', "grid.alpha: unknown key"),
        ('[grids]\n', "grids: unknown key"),
        ('[experiment]\nrounds=0\n', "experiment.rounds: Input should be greater than or equal to 1"),
        ('[experiment]\nround=3\n', "experiment.round: unknown key"),
        ('[experiment]\nrank=8\nmax_rank=4\n', "experiment: max_rank (4) must be >= rank (8)"),
        ('[experiment]\nmethod="fedavg"\n', "experiment.method: set it in [grid] instead, as methods = [\"fedavg\"]"),
        ('[experiment]\nalpha=0.1\n', "experiment.alpha: set it in [grid] instead, as alphas = [0.1]"),
        ('[experiment]\nseed=1979-05-27\n', "experiment.seed: set it in [grid] instead, as seeds = [\"1979-05-27\"]"),
        # An unknown key says where it belongs, or what it is a misspelling of.
        ('[grid]\nalpha=[0.5]\n', "grid.alpha: unknown key; did you mean 'alphas'?"),
        ('[grid]\nrounds=3\n', "grid.rounds: unknown key; it belongs under [experiment]"),
        ('[experiment]\nalphas=[0.5]\n', "experiment.alphas: unknown key; it belongs under [grid]"),
        ('[experiment]\nround=3\n', "experiment.round: unknown key; did you mean 'rounds'?"),
        ('[experiment]\nlearning_rate=0.1\n', "experiment.learning_rate: unknown key; did you mean 'lr'?"),
        ('[experimnt]\n', "experimnt: unknown key; did you mean 'experiment'?"),
        ('[grid]\nalphas=[-1]\n', "grid: every alpha must be > 0"),
        ("[grid\n", "not valid TOML"),
        # An empty file (saved empty, or not synced down yet) is not the defaults' grid.
        ("", "the grid file is empty"),
        ("# to do\n", "the grid file is empty"),
        # A worker trains on its own --device: a device in the grid was silently ignored.
        ('[experiment]\ndevice="cuda"\n', "experiment.device: a grid's items run on whichever machine claims them; pass --device"),
        # TOML has inf and nan: an infinite alpha went on to a NumPy warning and a split error, an infinite
        # lora_alpha into the queue as JSON's non-standard Infinity and NaN losses on every worker.
        ('[grid]\nalphas=[inf]\n', "grid.alphas.0: Input should be a finite number (got inf)"),
        ('[experiment]\nlora_alpha=inf\n', "experiment.lora_alpha: Input should be a finite number (got inf)"),
        ('[experiment]\ngrad_clip=inf\n', "experiment.grad_clip: Input should be a finite number (got inf)"),
        ('[experiment]\nlr=nan\n', "experiment.lr: Input should be a finite number (got nan)"),
    ],
)
def test_bad_grid_gives_one_line_naming_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_grid(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(path)) and expected in message


def test_missing_grid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="grid file not found"):
        load_grid(tmp_path / "nope.toml")


@pytest.mark.parametrize("bad", ["../x", "a/b", "a\\b", "", ".hidden", "x" * 200, "a..b"])
def test_item_ids_that_could_escape_the_root_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        check_item_id(bad)


@pytest.mark.parametrize("bad, why", [("con", "a device name on Windows"), ("Aux.seed1", "a device name on Windows"),
                                      ("NUL", "a device name on Windows"), ("com7", "a device name on Windows"),
                                      ("lpt1_fedavg", None), ("alpha0.", "Windows drops a name's final '.'")])
def test_names_a_windows_machine_of_the_grid_cannot_hold_are_refused(bad: str, why: str | None) -> None:
    """`aux.csv` on a share is the AUX device to a Windows worker; `x.` becomes `x` there, another item's file."""
    from fedspec.queue.identity import check_worker_name

    if why is None:  # a reserved name only as the whole stem: lpt1_fedavg is an ordinary name
        assert check_item_id(bad) == bad
        return
    with pytest.raises(ConfigError, match=f"not a valid item id \\({why}\\)"):
        check_item_id(bad)
    if "." not in bad:
        with pytest.raises(ConfigError, match=f"not a valid worker name \\({why}\\)"):
            check_worker_name(bad)
