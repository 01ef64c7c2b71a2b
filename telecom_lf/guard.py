"""The one place where untrusted strings become shell, YAML or paths.

Every string tlf did not write itself (spec and profile values, file and directory names, data
set names from a dataset_info.json, run names built from sweep values) is hostile until checked
here: it may hold a newline, ``../`` or ``$(...)``, and it may be a million characters long.

- ``text``: refuses control characters (newline, CR, NUL, the other C0 codes and DEL). A
  newline in a value that reaches a script or a comment line would start a line of its own.
- ``component``: a plain file-name component: one non-empty name, not ``.`` or ``..``, no
  ``/``, no control character, at most MAX_COMPONENT_BYTES bytes (room for ``predict-<name>.yaml``
  within the 255 bytes a file name may have).
- ``inside``: a path, resolved (symbolic links followed), that must lie under its root.
- ``integer``/``boolean``: typed values with bounds; YAML's ``"false"`` is not a boolean.
- ``printable``: text for a terminal with control and bidirectional-override characters shown
  as escapes: data (a run label, a failure cause) cannot clear the screen or reverse the numbers
  after it.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from pathlib import Path

from .errors import TlfError


class Refused(TlfError):
    """A value refused by a guard; ``detail`` is the message without the place, for callers
    that name the place themselves (a spec's file:line: key)."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"{where}: {detail}" if where else detail)
        self.detail = detail


# C0 and C1 controls and DEL, and U+2028/U+2029: U+0085 and those two end a line for YAML and
# Python's splitlines, so they would split a rendered comment line as a newline would.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_COMPONENT_BYTES = 200
CONTROL_NAMES = {"\n": "a newline", "\r": "a carriage return", "\x00": "a NUL", "\t": "a tab",
                 "\x85": "a next-line character (U+0085)", "\u2028": "a line separator (U+2028)",
                 "\u2029": "a paragraph separator (U+2029)"}


# C0 (but newline and tab) and C1 controls, DEL, and the bidirectional formatting characters.
UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                         "\u2028\u2029]")


def printable(value: str) -> str:
    """``value`` with every control or bidi character written as its escape (``\\x1b``, ``\\u202e``)."""
    return UNPRINTABLE.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), str(value))


def is_text(value: str) -> bool:
    """False for a string holding lone surrogates (bytes that were not UTF-8, or a JSON \\ud800):
    it cannot be written to a file or a terminal as UTF-8."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _control_name(value: str) -> str | None:
    found = CONTROL.search(value)
    if found is None:
        return None
    char = found.group()
    return CONTROL_NAMES.get(char, f"the control character {char!r}")


def text(value, where: str, what: str = "value") -> str:
    """``value`` as a string without control characters; ``where`` names the file, line and key."""
    if not isinstance(value, str):
        raise Refused(where, f"expected a string {what}, got {type(value).__name__} {_short(value)}")
    problem = _control_name(value)
    if not problem and not is_text(value):
        problem = "a lone surrogate such as '\\ud800' (not a character; a file cannot hold it)"
    if problem:
        raise Refused(where, f"{_short(value)} holds {problem}; a {what} must be one line of printable text")
    return value


def component(value, where: str, what: str = "name") -> str:
    """A plain file-name component: tlf puts it into a path, never lets it leave its directory."""
    text(value, where, what)
    if value in ("", ".", "..") or "/" in value or "\\" in value:
        raise Refused(where, f"{_short(value)} is not a plain {what}: it becomes a directory or file name, "
                       "so it must be one non-empty name without '/' and not '.' or '..'")
    if unicodedata.normalize("NFC", value) != value:
        raise Refused(where, f"{_short(value)} is not in Unicode normal form NFC: two names that look the same "
                       f"would be two different files; write it as {_short(unicodedata.normalize('NFC', value))}")
    if value.startswith("-"):
        raise Refused(where, f"{_short(value)} begins with '-': a {what} is passed to commands, where it would "
                       "read as an option")
    size = len(value.encode("utf-8"))
    if size > MAX_COMPONENT_BYTES:
        raise Refused(where, f"{_short(value)} is {size} bytes long; a {what} becomes a file name and may have "
                       f"at most {MAX_COMPONENT_BYTES} bytes")
    return value


def inside(path: Path, root: Path, where: str) -> Path:
    """``path`` resolved (links followed) if it lies under ``root`` (resolved too), else refused."""
    resolved, top = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    if resolved != top and top not in resolved.parents:
        raise Refused(where, f"{path} lies outside {root} (it resolves to {resolved}); tlf reads and "
                             "writes a tree only inside it")
    return resolved


def integer(value, where: str, low: int, high: int) -> int:
    """A whole number (not a boolean, not a string) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise Refused(where, f"expected a whole number from {low} to {high}, got {_short(value)}")
    if not low <= value <= high:
        raise Refused(where, f"{value} is out of range; expected {low} to {high}")
    return value


def number(value, where: str, low: float, high: float, unit: str = "") -> float:
    """A finite number (not a boolean) with low < value <= high."""
    expected = f"a number{f' of {unit}' if unit else ''} above {low:g} and at most {high:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Refused(where, f"expected {expected}, got {_short(value)}")
    if not low < value <= high:
        raise Refused(where, f"{value} is out of range; expected {expected}")
    return value


def boolean(value, where: str) -> bool:
    """true or false as YAML booleans: the string "false" is truthy in Python and is refused."""
    if not isinstance(value, bool):
        raise Refused(where, f"expected true or false, got {_short(value)}"
                       + (" (a quoted string, not a YAML boolean)" if isinstance(value, str) else ""))
    return value


def _short(value, limit: int = 80) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit] + f"... ({len(shown)} characters)"
