"""The ``fedspec`` command: every FedspecError becomes one line and a non-zero exit."""

from __future__ import annotations

import atexit
import gc
import sys

import typer
from rich.markup import escape

from fedspec import __version__
from fedspec.cli.common import console
from fedspec.cli.plots import plots
from fedspec.cli.retry import retry
from fedspec.cli.run import run
from fedspec.cli.status import status
from fedspec.cli.worker import worker
from fedspec.errors import FedspecError, describe_os_error

# The base class of click's usage errors, from typer's own copy of click (typer >= 0.2x) or the click package.
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

app = typer.Typer(
    help="Federated LoRA experiments (FedAvg vs FedSpec) over a folder that several machines share.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        print(f"fedspec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print fedspec's version and exit (keep it equal on every machine of a grid)."),
) -> None:
    """Federated LoRA experiments (FedAvg vs FedSpec) over a folder that several machines share.

    Typical use: `fedspec worker --grid experiments/quick.toml` on every
    machine, `fedspec status` to watch, `fedspec plots` for the figures.
    """


app.command("run")(run)
app.command("worker")(worker)
app.command("status")(status)
app.command("retry")(retry)
app.command("plots")(plots)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; a usage error is one line too (exit 2), like every FedspecError."""
    try:
        code = app(args=argv, prog_name="fedspec", standalone_mode=False)  # click's errors come back here
    except _CLICK_ERROR as err:  # a misspelt option, a value out of range, an extra argument
        if type(err).__name__ == "NoArgsIsHelpError":  # bare `fedspec`: the help (typer's rich help prints itself)
            if err.format_message().strip():
                print(err.format_message(), file=sys.stderr)
            return err.exit_code
        ctx = getattr(err, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        console.print(f"[red]error:[/red] {escape(err.format_message())}{hint}", highlight=False, soft_wrap=True)
        return err.exit_code
    except FedspecError as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        return err.exit_code
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    except OSError as err:  # the machine's problem, not a bug: full disk, read-only or vanished folder
        console.print(f"[red]error:[/red] {escape(describe_os_error(err))}", highlight=False, soft_wrap=True)
        return 1
    except SystemExit as ex:
        return ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 1)
    return code if isinstance(code, int) else 0  # typer.Exit(n) comes back as n


def _escape_what_output_cannot_encode() -> None:
    """Characters the output's encoding lacks are written as escapes (``\\u6f22``) instead of stopping the command.

    Windows writes a redirected stdout (a worker's log) in its ANSI code page,
    such as cp1252, and stops at the first character outside it: a root under
    a folder named in Cyrillic or Chinese stopped the worker with a
    UnicodeEncodeError at its first line.  (Python's stderr escapes already.)
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):  # not a text file of io's (None, a test's capture): left as it is
            pass


def entry() -> None:
    """Console-script wrapper: exits with :func:`main`'s code."""
    _escape_what_output_cannot_encode()
    # At exit the interpreter's last garbage collection walks every object of
    # torch's modules: 0.4-0.8 s per process once torch._dynamo is loaded.
    # Frozen objects are skipped; files are closed and logs flushed as usual.
    atexit.register(gc.freeze)
    sys.exit(main())


if __name__ == "__main__":
    entry()
