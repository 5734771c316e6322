"""The ``robustscale`` command line: a thin typer app over the library.

Each area of the paper registers its commands from ``robustscale/_cli/<area>.py`` (a ``register(app)`` function),
so this file stays a table of contents. The command modules import the library inside each command, so
``robustscale --help`` (and ``robustscale <command> --help``) loads no torch, timm, pandas, scikit-learn or matplotlib.

User errors (:class:`robustscale.errors.UserError`), click's usage errors (unknown option or command, missing
argument, bad value) and errors of the environment (``OSError``: a full disk, an unreadable file) print one line and
exit with status 2; anything else is a bug and keeps its traceback. A library error names the function's parameter
(``gpus must be at least 1``); the line printed here names the flag instead (``--gpus must be at least 1``).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import sys

import typer
from typer.main import get_command

import robustscale._cli as areas
from robustscale._version import __version__
from robustscale.errors import UserError, one_line, shown

app = typer.Typer(
    name="robustscale",
    help="Scaling laws for adversarial robustness: train, attack, account for and analyse robust classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"robustscale {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Scaling laws for adversarial robustness."""


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(areas.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"robustscale._cli.{info.name}").register(app)


_register_all()


@functools.cache
def _command():
    """The app as one click command, built once per process: typer rebuilds it from every command's signature on
    each call (12 ms here), and tests and scripts call :func:`main` hundreds of times in one process."""
    return get_command(app)


def _click_exceptions() -> tuple[type[BaseException], ...]:
    """click's ``ClickException`` as this typer raises it: recent typer (0.29) vendors its own click (``typer._click``),
    so ``click.ClickException`` would never match; older typer (0.12 ... 0.20) raises click's. ``typer.BadParameter`` is exported by
    every typer version and derives from whichever one is in use, so the base is found through it (and click's own
    class is added when click is installed)."""
    found = [cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException"]
    try:
        import click

        found.append(click.ClickException)
    except ImportError:  # pragma: no cover - typer without a separate click
        pass
    return tuple(dict.fromkeys(found))


def _usage_error(err: Exception) -> int:
    """A usage error (unknown option or command, missing argument, bad value) as one line; exit status 2."""
    if type(err).__name__ == "NoArgsIsHelpError":  # `robustscale` alone: the help is the answer
        typer.echo(err.format_message())
        return 0
    ctx = getattr(err, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    typer.echo(f"error: {one_line(err.format_message())}{hint}", err=True)
    return 2


# library parameters whose flag is not "--" + the name with dashes
FLAGS = {"mapping": "--map", "target_loss": "--target", "attack_steps": "--steps", "measured_tflops": "--measure",
         "synthetic": "--synthetic/--no-synthetic", "ema": "--ema/--no-ema"}


def flag(param: str) -> str:
    """The command-line flag of a library parameter."""
    return FLAGS.get(param, "--" + param.replace("_", "-"))


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors (ours and click's usage errors) into one line on stderr and
    exit status 2."""
    try:
        # standalone_mode=False: click returns typer.Exit's code and raises usage errors instead of printing them
        code = _command().main(args=argv, standalone_mode=False, prog_name="robustscale")
    except UserError as err:
        typer.echo(f"error: {one_line(err.reworded({p: flag(p) for p in err.params}))}", err=True)
        return 2
    except typer.Exit as ex:
        return ex.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except _click_exceptions() as err:
        return _usage_error(err)
    except OSError as err:  # the environment, not a bug: a full disk, a file that cannot be read or written
        where = f" ({shown(err.filename)})" if err.filename else ""
        typer.echo(f"error: {one_line(err.strerror or err)}{where}: check the path, its permissions and free space",
                   err=True)
        return 2
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
