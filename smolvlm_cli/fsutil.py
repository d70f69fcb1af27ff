# Atomic output folders: write into a hidden temp sibling, then rename into place.
# A crash, a bad input or a full disk leaves the previous folder (or nothing) behind, never half a folder.
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError


def cache_root() -> Path:
    """$SMOLVLM_CACHE, default ~/.cache/smolvlm: downloads, synthetic data, the frame cache, converted checkpoints."""
    return Path(os.environ.get("SMOLVLM_CACHE") or Path.home() / ".cache" / "smolvlm")


def check_output_dir(out: Path, force: bool) -> None:
    """Fail early, before any heavy work, if `out` cannot be (re)placed."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"output '{out}' exists and is a file", "choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError(f"output folder '{out}' is not empty", "pass --force to replace it or choose another --out")


@contextmanager
def atomic_output_dir(out: Path, force: bool = False):
    out = Path(out)
    check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise OutputError(f"disk full while writing '{out}'", "free some space or choose another --out") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
