"""Small file helpers shared by every stage: atomic writes, content hashes, strict YAML."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from .errors import TlfError

STARTED = time.time()   # a temporary file of tlf's older than this is debris of a killed process


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def default_mode(directory: bool = False) -> int:
    """The mode a plain ``open()`` (or ``mkdir``) gives under the current umask (0644/0755 under 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def atomic_write(path: Path, payload: bytes | str) -> None:
    """Write to a temporary file beside ``path`` then rename: readers never see half a file. See write_all."""
    write_all({Path(path): payload})


def write_all(files: dict[Path, bytes | str], follow_links=()) -> None:
    """Files that belong together appear all or none. Each is first written whole to a temporary
    file beside its target (a full disk fails here, naming the file, before anything is visible);
    only then are they renamed into place. On a failure the temporary files and the directories
    this call created are removed, and debris of an earlier killed write is removed before. New
    files get the mode a plain write would give them (0644 under umask 022), not mkstemp's 0600:
    other users of a shared tree must still read them; a replaced file keeps its mode and, where
    allowed, its owner. A symbolic link is replaced by the file, its target left alone (a link
    planted in a directory tlf writes must not redirect the write), except the paths in
    ``follow_links``, files of the user's that tlf updates (a shared dataset_info.json)."""
    follow = {Path(p) for p in follow_links}
    created: list[Path] = []
    targets: dict[Path, bytes] = {}
    staged: list[tuple[str, Path]] = []
    held: list[int] = []
    try:
        for path, payload in files.items():
            path = Path(path)
            target = Path(os.path.realpath(path)) if path in follow and path.is_symlink() else path
            _make_dirs(target.parent, created)
            targets[target] = payload.encode("utf-8") if isinstance(payload, str) else payload
        for directory in dict.fromkeys(target.parent for target in targets):   # once per directory
            remove_stale_temporaries(directory, [t.name for t in targets if t.parent == directory])
        for target, blob in targets.items():
            staged.append(_stage(target, blob, held))
        for tmp, target in staged:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _target in staged:
            Path(tmp).unlink(missing_ok=True)
        for directory in reversed(created):
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    finally:
        for fd in held:
            os.close(fd)


def _make_dirs(directory: Path, created: list[Path]) -> None:
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir()
        created.append(path)


TEMP_MARK = ".tlf-tmp-"
# Ours: .<name>.tlf-tmp-<8 random>; before the mark (older releases): .<name>.<8 random>, matched per target.
OURS = re.compile(r"\..+" + re.escape(TEMP_MARK) + r"[a-z0-9_]{8}")


def _temp_prefix(target: Path) -> str:
    return f".{target.name[:100]}{TEMP_MARK}"


def remove_stale_temporaries(directory: Path, names: list[str]) -> None:
    """Remove the temporary files killed earlier writes left in ``directory``: tlf's (named as
    _stage names them, for any file there; or, as older releases named them, for the files
    ``names`` being written now), older than this process, and not locked (a live writer holds a
    lock on its temporary file until it is renamed)."""
    legacy = re.compile("|".join(re.escape(f".{name[:100]}.") for name in names) + r"[a-z0-9_]{8}") if names else None
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            named = OURS.fullmatch(entry.name) or (legacy and legacy.fullmatch(entry.name))
            if not named or not entry.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime >= STARTED:
                    continue
                fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.unlink(entry.path)
                finally:
                    os.close(fd)


def remove_stale_directories(parent: Path, prefix: str) -> None:
    """Remove staging directories ``prefix*`` in ``parent`` left by a killed earlier process (older than this one)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            if entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < STARTED:
                        shutil.rmtree(entry.path)


def _stage(target: Path, blob: bytes, held: list[int]) -> tuple[str, Path]:
    """``blob`` in a temporary file beside ``target`` (locked until the process closes it), with the
    mode (and owner) it should end with."""
    try:
        existing = os.stat(target, follow_symlinks=False)
        mode, owner = existing.st_mode & 0o7777, (existing.st_uid, existing.st_gid)
        if os.path.islink(target):
            mode, owner = default_mode(), None
    except OSError:
        mode, owner = default_mode(), None
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), dir=target.parent)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.append(os.dup(fd))
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(fd, mode)
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                with contextlib.suppress(OSError):
                    os.fchown(fd, *owner)
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:   # a full disk: name the file
            raise OSError(error.errno, error.strerror, str(target)) from None
        raise
    return tmp, target


MAX_YAML_NODES = 100_000     # a spec or profile has hundreds; an alias bomb has billions


def load_yaml_strict(blob: bytes, path: Path) -> tuple[object, dict[tuple, int]]:
    """A YAML document and the line of every key, refusing what PyYAML lets through: a key given
    twice in one mapping (PyYAML keeps the last silently) and aliases that expand past
    MAX_YAML_NODES. Errors name the file and line."""
    try:
        loader = yaml.SafeLoader(blob.decode("utf-8"))
        try:
            node = loader.get_single_node()
            lines: dict[tuple, int] = {}
            if node is not None:
                _walk(node, (), lines, [0], path)
            document = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except UnicodeDecodeError as error:
        raise TlfError(f"{path}: not UTF-8 ({error})") from None
    except RecursionError:
        raise TlfError(f"{path}: nested too deeply to read (a spec or profile is a few levels deep)") from None
    except ValueError as error:   # an integer of more digits than Python converts (4300)
        raise TlfError(f"{path}: a value cannot be read ({str(error).split(';')[0]}); no spec or profile value "
                       "needs that many digits") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise TlfError(f"{where}: invalid YAML ({getattr(error, 'problem', None) or error})") from None
    return document, lines


def _walk(node, prefix: tuple, lines: dict[tuple, int], visited: list[int], path: Path) -> None:
    visited[0] += 1
    if visited[0] > MAX_YAML_NODES:
        raise TlfError(f"{path}: more than {MAX_YAML_NODES} YAML nodes once aliases are expanded "
                       "(an alias bomb?); write the values out")
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.value in seen and isinstance(key_node, yaml.ScalarNode):
                raise TlfError(f"{path}:{line}: {'.'.join(map(str, prefix + (key_node.value,)))} is given twice "
                               f"(first at line {seen[key_node.value]}); YAML would keep the last silently")
            seen[key_node.value] = line
            lines[prefix + (key_node.value,)] = line
            _walk(value_node, prefix + (key_node.value,), lines, visited, path)
    elif isinstance(node, yaml.ScalarNode) and not node.value.isascii():
        try:
            node.value.encode("utf-8")
        except UnicodeEncodeError:
            where = ".".join(map(str, prefix)) or "a value"
            raise TlfError(f"{path}:{node.start_mark.line + 1}: {where}: holds a lone surrogate escape such as "
                           "\\ud800 (not a character; no file or terminal can hold it)") from None
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[prefix + (index,)] = item.start_mark.line + 1
            _walk(item, prefix + (index,), lines, visited, path)
