"""The ``robustscale`` command line: a thin typer app over the library.

Each area of the paper registers its commands from ``robustscale/_cli/<area>.py`` (a ``register(app)`` function),
so this file stays a table of contents. User errors (:class:`robustscale.errors.UserError`) print one line and exit
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

import robustscale
from robustscale.errors import UserError

app = typer.Typer(
    name="robustscale",
    help="Scaling laws for adversarial robustness: train, attack, account for and analyse robust classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"robustscale {robustscale.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Scaling laws for adversarial robustness."""


def _register_all() -> None:
    import robustscale._cli as areas

    for info in sorted(pkgutil.iter_modules(areas.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"robustscale._cli.{info.name}").register(app)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line on stderr and exit status 2."""
    try:
        code = app(args=argv, standalone_mode=False)  # click returns typer.Exit's code instead of raising it
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        return 2
    except typer.Exit as ex:
        return ex.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except Exception as err:  # click's usage errors carry their own exit code 2
        import click

        if isinstance(err, click.ClickException):
            err.show()
            return err.exit_code
        raise
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
