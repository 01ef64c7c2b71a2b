"""Small file helpers shared by every stage: atomic writes, content hashes, strict YAML."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import yaml

from .errors import TlfError


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
    """Write to a temporary file beside ``path`` then rename: readers never see half a file.
    The file gets the mode a plain write would give it (a replaced file keeps its own mode),
    not mkstemp's 0600: other users of a shared tree must still read it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = payload.encode("utf-8") if isinstance(payload, str) else payload
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = default_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[prefix + (index,)] = item.start_mark.line + 1
            _walk(item, prefix + (index,), lines, visited, path)
