"""Atomic file writes: the one place where results reach the disk.

Everything long jobs write (potentials, datasets, records, checkpoints,
active-set states) goes through a temporary file in the target's directory,
flushed to disk and moved into place with :func:`os.replace`; a killed
process leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "save_figure", "remove_stale_temporaries"]

#: Names of the temporary files :func:`atomic_path` creates: ``.<target>.<8 random>[<suffix>]``
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)?$")


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends normally the
    file is synced and replaces ``path``, otherwise it is removed.

    ``suffix`` lets writers that choose a format by extension (ASE, numpy)
    see the right one.
    """
    target = Path(os.fspath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600 files
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)


def atomic_write_json(path: str | os.PathLike, doc: Any, indent: int | None = 1) -> None:
    """Write ``doc`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(doc, indent=indent, default=float) + "\n")


def remove_stale_temporaries(root: str | os.PathLike) -> list[Path]:
    """Delete temporary files that a killed writer left under ``root`` (recursively).

    Call it only where this process is the sole writer (a learning run's state
    directory at start-up). Returns the removed paths.
    """
    removed = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if _TEMPORARY.match(name):
                p = Path(dirpath) / name
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically (PNG by the target's extension)."""
    path = Path(path)
    with atomic_path(path, suffix=path.suffix or ".png") as tmp:
        fig.savefig(tmp, dpi=dpi)
    return path
