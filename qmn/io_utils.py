"""Atomic file writes and safe path handling shared by every writer (model, data, app)."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _default_file_mode() -> int:
    umask = os.umask(0)  # os.umask cannot be read without setting it: done once, at import, before any thread
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync + rename it over `path`, else delete it.

    A crash at any moment leaves either the old file or the new one, never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)  # mkstemp (or a writer that recreates the file) leaves 0600
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj, indent: int | None = None) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent))


def safe_join(root: str | Path, relative: str) -> Path:
    """`root / relative`, refusing absolute paths, `..` escapes and symlinks that leave `root`."""
    root_resolved = Path(root).resolve()
    if not relative or Path(relative).is_absolute() or "\x00" in relative:
        raise ValueError(f"unsafe path {relative!r}: must be a relative path inside the workspace")
    candidate = (root_resolved / relative).resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise ValueError(f"unsafe path {relative!r}: it leaves the workspace")
    return candidate
