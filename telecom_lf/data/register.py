"""dataset_info.json: entries merged under a lock, every other tool's entry and its order kept."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from .. import inputs, lock
from ..errors import TlfError
from ..fsutil import write_all
from .common import dataset_entry, refuse_inputs


def split_entries(splits: dict, split_dir: Path, info: Path) -> dict[str, dict]:
    """dataset_info.json entries for a manifest's splits, with file names relative to ``info``."""
    return {name: dataset_entry(relative_file(split_dir / split["file"], info.parent))
            for name, split in splits.items()}


def relative_file(data_file: Path, info_dir: Path) -> str:

    try:
        return os.path.relpath(data_file.resolve(), info_dir.resolve())
    except ValueError:
        return str(data_file.resolve())


# ---------------------------------------------------------------- registration


def _load_info(info: Path) -> dict:
    if not info.exists():
        return {}
    try:
        loaded = json.loads(inputs.read_input(info, "record"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TlfError(f"{info}: not valid JSON ({error}); refusing to touch it") from None
    except RecursionError:
        raise TlfError(f"{info}: not valid JSON (nested too deeply); refusing to touch it") from None
    if not isinstance(loaded, dict):
        raise TlfError(f"{info}: expected a JSON object of dataset entries")
    return loaded


def check_registration(info: Path, entries: dict[str, dict], force: bool) -> None:
    existing = _load_info(info)
    for name, entry in entries.items():
        if name in existing and existing[name] != entry and not force:
            raise TlfError(f"{info}: entry {name!r} exists and differs "
                           f"(has {json.dumps(existing[name], ensure_ascii=False)}); pass --force to replace it")


def merged_info(info: Path, entries: dict[str, dict], force: bool = False,
                dropped: dict[str, dict] | None = None) -> bytes | None:
    """``info`` with ``entries`` merged in, every other entry and the order kept; None when every
    entry is there already. A different entry under the same name is refused unless ``force``.
    ``dropped``: entries of an earlier split to take out, each only while it is still the entry
    tlf wrote (one the user changed stays)."""
    existing = _load_info(info)
    check_registration(info, entries, force)
    gone = {name for name, entry in (dropped or {}).items() if existing.get(name) == entry and name not in entries}
    if all(existing.get(name) == entry for name, entry in entries.items()) and not gone:
        return None
    merged = {name: entry for name, entry in {**existing, **entries}.items() if name not in gone}
    return (json.dumps(merged, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _info_lock(info: Path):
    """Registrations into one dataset_info.json queue behind each other; the lock leaves no file."""
    return lock.transient(info) if info.parent.is_dir() else contextlib.nullcontext()


def register(info: Path, entries: dict[str, dict], force: bool = False, inputs: tuple[Path, ...] = ()) -> list[str]:
    """Merge ``entries`` into ``info`` under a lock, keeping every other entry and the order.

    Returns the names that changed. An identical entry is a no-op; a different one under
    the same name is refused unless ``force`` (then replaced in place). A refusal leaves the
    directory as it was: no lock file, no new directory.
    """
    info = Path(info)
    refuse_inputs([info], inputs)
    merged_info(info, entries, force)
    with _info_lock(info):
        before = _load_info(info)
        merged = merged_info(info, entries, force)
        if merged is not None:
            write_all({info: merged}, follow_links=[info])
    return [name for name, entry in entries.items() if before.get(name) != entry]


# ---------------------------------------------------------------- checks
