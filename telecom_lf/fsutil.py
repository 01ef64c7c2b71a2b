"""Small file helpers shared by every stage: atomic writes and content hashes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


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
