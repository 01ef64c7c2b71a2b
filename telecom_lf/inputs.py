"""One rule for every file a command reads.

Inputs are regular files, checked on the open descriptor before a byte is read (a FIFO would
block for ever, /dev/zero never ends, a directory is not a file), and at most a size per kind of
input, named in the refusal.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import TlfError

MIB = 1 << 20
# Far above any real input of the kind, far below what would exhaust the machine's memory.
LIMITS = {"spec": 4 * MIB, "cluster profile": 1 * MIB, "predictions": 512 * MIB, "raw data": 1024 * MIB,
          "data set": 1024 * MIB, "record": 64 * MIB, "questions": 16 * MIB, "request": 16 * MIB}
QUOTE_LIMIT = 200   # characters of an input quoted in a message


def quote(value, limit: int = QUOTE_LIMIT) -> str:
    """``value`` as repr, cut to ``limit`` characters with the length said."""
    shown = repr(value)
    return shown if len(shown) <= limit else f"{shown[:limit]}... ({len(shown)} characters)"


def kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO (named pipe)"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _refuse_kind(path: Path, mode: int, kind: str) -> None:
    if not stat.S_ISREG(mode):
        raise TlfError(f"{path}: is a {kind_of(mode)}, not a regular file; tlf reads a {kind} only from a "
                       "regular file")


def _limit_message(path: Path, size: int, kind: str) -> str:
    limit = LIMITS[kind]
    return f"{path}: {size} bytes or more; a {kind} file may have at most {limit} bytes ({limit // MIB} MiB)"


def check_input(path: Path, kind: str) -> int:
    """Refuse ``path`` by name unless it is a regular file of at most LIMITS[kind] bytes; its size."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise TlfError(f"{path}: cannot read {kind}: no such file") from None
    except OSError as error:
        raise TlfError(f"{path}: cannot read {kind} ({error.strerror})") from None
    _refuse_kind(Path(path), info.st_mode, kind)
    if info.st_size > LIMITS[kind]:
        raise TlfError(_limit_message(Path(path), info.st_size, kind))
    return info.st_size


def read_input(path: Path, kind: str, what: str | None = None) -> bytes:
    """The bytes of a regular file of at most LIMITS[kind] bytes. The kind of file is checked on
    the open descriptor (opened without blocking), so a FIFO swapped in after a check is refused
    too. ``what`` names the file in messages (default: the kind)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise TlfError(f"{path}: cannot read {what or kind}: no such file") from None
    except IsADirectoryError:
        raise TlfError(f"{path}: is a directory, not a regular file; tlf reads a {kind} only from a regular "
                       "file") from None
    except OSError as error:
        raise TlfError(f"{path}: cannot read {what or kind} ({error.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        _refuse_kind(path, info.st_mode, kind)
        if info.st_size > LIMITS[kind]:
            raise TlfError(_limit_message(path, info.st_size, kind))
        blob = handle.read(LIMITS[kind] + 1)   # a file that grows while it is read
    if len(blob) > LIMITS[kind]:
        raise TlfError(_limit_message(path, len(blob), kind))
    return blob
