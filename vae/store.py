"""Writing files so that a reader never sees half of one: the one atomic writer of the suite.

Every file the suite writes that another process may read while it runs, or that a kill may
interrupt (checkpoints, the data cache, a run's config, metrics and summary, tables), goes through
:func:`atomic_write`: the bytes go to a temporary file beside the target, are flushed to disk, and
the temporary file is renamed over the target (an atomic step on POSIX file systems). On any
failure the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Create or replace ``path`` with what ``write(file)`` writes to a binary file, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """``text`` (UTF-8) to ``path``, atomically."""
    atomic_write(path, lambda fh: fh.write(text.encode()))


def atomic_save(obj: object, path: Path) -> None:
    """``torch.save(obj)`` to ``path``, atomically (read back with ``torch.load(weights_only=True)``)."""
    atomic_write(path, lambda fh: torch.save(obj, fh))
