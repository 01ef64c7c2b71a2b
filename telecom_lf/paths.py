"""One rule for every path a command writes (what it reads: inputs.py).

Outputs are never one of the command's inputs and never a special file, and a directory is
replaced (``--force``) only when tlf wrote it: tlf marks the directories it owns (an exported
model, a tiny model, a report) with a ``.tlf-owned`` file naming their kind and the files it wrote
there; a run, an experiment and a data set are known by their own records. A directory without
that mark is the user's and is refused even with ``--force``, as is one that holds an input or the
working directory, the home directory or ``/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from . import rundir
from .errors import TlfError
from .fsutil import default_mode, remove_stale_directories
from .inputs import kind_of, read_input

MARKER = ".tlf-owned"


# ---------------------------------------------------------------- outputs

def check_output_file(path: Path, option: str, inputs=()) -> None:
    """An output file: not an input of the command, not a directory or special file (nor a link
    to one). A link to a regular file is replaced by the output, its target left alone."""
    path = Path(path)
    where = f"{option} {path}" if option else str(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as error:
        raise TlfError(f"{where}: cannot write there ({error.strerror})") from None
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise TlfError(f"{where}: is a {kind_of(info.st_mode)}; an output must be a new or regular file")
    target = os.path.realpath(path)
    for given in inputs:
        if given is not None and os.path.realpath(given) == target:
            raise TlfError(f"{where}: is one of this command's inputs ({given}); choose another path")


def owner(directory: Path) -> str | None:
    """What tlf wrote ``directory`` as ('export', 'model', 'report', 'run', 'experiment', 'data set'), or None."""
    directory = Path(directory)
    marker = read_marker(directory)
    if marker is not None:
        return marker.get("kind")
    records = ((rundir.MANIFEST, "run"), (rundir.EXPERIMENT, "experiment"), (rundir.SPLIT_MANIFEST, "data set"),
               ("tlf_tiny.json", "model"), ("tlf_export.json", "export"))   # the last two: before the marker
    for name, kind in records:
        if (directory / name).is_file() and not (directory / name).is_symlink():
            return kind
    return None


def read_marker(directory: Path) -> dict | None:
    path = Path(directory) / MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        marker = json.loads(read_input(path, "record"))
    except (TlfError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("kind"), str) else None


def marker(kind: str, files=()) -> bytes:
    """The ``.tlf-owned`` file of a directory tlf wrote as ``kind``, listing the files it wrote there."""
    return (json.dumps({"format_version": 1, "kind": kind, "files": sorted(files)}, indent=1) + "\n").encode()


def _never_replaced(directory: Path) -> str | None:
    resolved = Path(os.path.realpath(directory))
    cwd = Path(os.path.realpath(Path.cwd()))
    if resolved == Path(resolved.anchor):
        return "the root directory"
    if resolved == Path(os.path.realpath(Path.home())):
        return "your home directory"
    if resolved == cwd or resolved in cwd.parents:
        return "the working directory or one above it"
    return None


def claim_directory(directory: Path, kind: str, force: bool, option: str, inputs=()) -> None:
    """May a command that writes a whole ``kind`` directory replace ``directory``? A missing or
    empty one, yes; a non-empty one only with ``force`` and only when tlf wrote it as ``kind``."""
    directory = Path(directory)
    where = f"{option} {directory}"
    if directory.is_symlink():
        raise TlfError(f"{where}: is a symbolic link; give the real directory")
    if directory.exists() and not directory.is_dir():
        raise TlfError(f"{where}: is a file, not a directory")
    danger = _never_replaced(directory)
    if danger:
        raise TlfError(f"{where}: is {danger}; tlf never replaces it, even with --force; give a new directory")
    resolved = Path(os.path.realpath(directory))
    for given in inputs:
        if given is not None and (Path(os.path.realpath(given)) == resolved or
                                  resolved in Path(os.path.realpath(given)).parents):
            raise TlfError(f"{where}: holds this command's input {given}; give another directory")
    if not directory.exists() or not any(directory.iterdir()):
        return
    if not force:
        raise TlfError(f"{where}: exists and is not empty; pass --force to replace it (only a {kind} directory "
                       "tlf wrote is replaced)")
    found = owner(directory)
    if found != kind:
        article = "an" if found and found[0] in "aeiou" else "a"
        what = f"{article} {found} directory" if found else f"a directory tlf did not write (no {MARKER} file)"
        raise TlfError(f"{where}: is {what}; --force replaces only a {kind} directory tlf wrote, so nothing was "
                       "touched; remove it yourself or give another directory")


@contextlib.contextmanager
def staged_directory(out: Path, kind: str) -> Iterator[Path]:
    """Build a whole ``kind`` directory beside ``out`` and put it in place only when the build
    finished: yields an empty directory to fill (its parent is scratch space, removed after). On
    success the files are marked as tlf's, made readable as a plain ``open()`` would (not
    safetensors' 0600: a model is read by others on a shared tree) and replace ``out`` whole; on
    failure ``out`` is untouched. A killed earlier build's staging directory is removed first.
    The caller has claimed ``out`` (claim_directory)."""
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_directories(out.parent, f".{out.name}.tlf-")
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tlf-", dir=out.parent))
    staged = work / "out"
    staged.mkdir()
    try:
        yield staged
        (staged / MARKER).write_bytes(marker(kind, [p.name for p in staged.iterdir()]))
        for path in [staged, *staged.rglob("*")]:
            path.chmod(default_mode(directory=path.is_dir()))
        if out.exists():
            shutil.rmtree(out)
        staged.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
