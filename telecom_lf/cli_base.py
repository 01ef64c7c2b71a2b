"""What every ``tlf`` command shares: one message and an exit code for each kind of failure (bad
input 2, a failed step or job 1, a fault of the machine 1 naming the file, a bug 1 with its
traceback saved), and help lines that are not cut at 45 characters."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__, guard
from .errors import Failed, TlfError


def _first_line(command: click.Command) -> str:
    text = (command.short_help or command.help or "").strip()
    return text.splitlines()[0] if text else ""


class Command(click.Command):
    """`tlf --help` lists each command with its whole first line, not click's 45 characters."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return _first_line(self)


class Group(click.Group):
    """Bad input (TlfError) anywhere below: one message, exit 2; a failed step or job: exit 1."""

    command_class = Command

    def get_short_help_str(self, limit: int = 45) -> str:
        return _first_line(self)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Failed as error:
            click.echo(f"tlf: {_clipped(str(error))}", err=True)
            sys.exit(1)
        except TlfError as error:
            click.echo(f"tlf: error: {_clipped(str(error))}", err=True)
            sys.exit(2)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except OSError as error:   # the machine, not the input: a full disk, a permission, a vanished file
            where = f"{error.filename}: " if error.filename else ""
            click.echo(guard.printable(f"tlf: {where}{error.strerror or error}"), err=True)
            sys.exit(1)
        except Exception as error:
            click.echo(f"tlf: internal error (a bug in tlf, not in your input): {type(error).__name__}: "
                       f"{guard.printable(str(error)[:300])}; {_save_traceback()}", err=True)
            sys.exit(1)


def say(message="", **options) -> None:
    """click.echo for text that carries data (run names, labels, failure causes, answers): control
    and bidirectional-override characters are shown as escapes, never acted on by the terminal."""
    click.echo(guard.printable(message), **options)


MESSAGE_LIMIT = 2000


def _clipped(message: str) -> str:
    """A message quotes at most ~200 characters of any input where it is built; this is the net
    for text a library put into it (a parser quoting a 5 MB line)."""
    message = guard.printable(message)
    if len(message) <= MESSAGE_LIMIT:
        return message
    return f"{message[:MESSAGE_LIMIT]}... (cut; {len(message)} characters)"


def _save_traceback() -> str:
    """The traceback of the exception being handled, in a file under ~/.cache/tlf/crashes/ (or,
    where that cannot be written, a read-only HOME, under the temporary directory); never on the
    terminal."""
    import os
    import tempfile
    import time
    import traceback

    text = f"tlf {__version__}: {' '.join(sys.argv)}\n\n{traceback.format_exc()}"
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for base in (Path(cache) / "tlf" / "crashes", Path(tempfile.gettempdir()) / f"tlf-crashes-{os.getuid()}"):
        try:
            base.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = base / name
            path.write_text(text, encoding="utf-8")
            return f"the traceback is in {path}; please report it with the command you ran"
        except OSError:
            continue
    return "the traceback could not be saved (no writable cache or temporary directory); rerun to report it"


Group.group_class = Group


SPEC_ARGUMENT = click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
RUNS_OUT_OPTION = click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
                               show_default=True, help="The runs root: runs go to OUT/<experiment>/<run>/.")
SET_OPTION = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a spec key (dotted, YAML value), e.g. model=/models/tiny "
                               "or predict.fp16=false. Repeatable.")


def spec_options(*options):
    """SPEC, --out (the runs root), the command's own options, then --set: every command that
    reads a spec takes them in this order."""
    def decorate(function):
        for option in reversed((SPEC_ARGUMENT, RUNS_OUT_OPTION, *options, SET_OPTION)):
            function = option(function)
        return function
    return decorate


def load_spec(spec_path: Path, overrides, require_model: bool = True):
    from . import spec as spec_mod

    loaded = spec_mod.load(spec_path, list(overrides), require_model)
    for note in loaded.notes:
        say(f"tlf: note: {note}", err=True)
    return loaded
