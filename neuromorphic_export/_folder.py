"""Replace a whole folder atomically: build the new content in a temporary folder beside it, then
swap the two, so that the folder always holds either its previous content or the new one.

On Linux the swap is one ``renameat2(RENAME_EXCHANGE)`` call; elsewhere it is two renames (the
folder is briefly absent between them, never mixed). A process killed while building leaves only
a hidden ``.<name>.export-<pid>-*`` folder beside the destination, removed by the next export.
(Single files are written with :mod:`neuromorphic_export._io`'s atomic writes.)
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path

from ._io import pid_alive

__all__ = ["new_staging_folder", "swap_in", "remove_stale_staging", "writable", "read_only_problem"]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def writable(path: Path) -> bool:
    """Writable by this process, and not marked read-only (root ignores the mode, we do not)."""
    return os.access(path, os.W_OK) and bool(Path(path).stat().st_mode & 0o200)


def read_only_problem(folder: "str | os.PathLike", option: str = "--out") -> str | None:
    """Why nothing can be written into ``folder`` (or, when it does not exist yet, into the nearest
    folder above it that does), or None. Checked before long work starts, not after it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return f"{option} {folder} is a file; give a folder"
    existing = folder if folder.exists() else next(p for p in folder.resolve().parents if p.exists())
    if not writable(existing):
        what = f"{option} {folder} is" if existing == folder else f"{existing} (where {option} {folder} would be made) is"
        return f"{what} read-only; make it writable (chmod u+w) or choose another {option} (nothing was changed)"
    return None


def _staging_prefix(dest: Path) -> str:
    return f".{dest.name}.export-"


def new_staging_folder(dest: Path) -> Path:
    """An empty folder beside ``dest`` (same file system, so the swap is a rename)."""
    return Path(tempfile.mkdtemp(prefix=f"{_staging_prefix(dest)}{os.getpid()}-", dir=dest.parent))


def remove_stale_staging(dest: Path) -> list[Path]:
    """Remove staging folders beside ``dest`` left by exports whose process is gone; returns them."""
    removed = []
    prefix = _staging_prefix(dest)
    if not dest.parent.is_dir():
        return removed
    for entry in dest.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        pid = entry.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_in(staging: Path, dest: Path) -> None:
    """Make ``staging`` become ``dest``; the previous ``dest`` (if any) is deleted afterwards."""
    if not dest.exists():
        os.rename(staging, dest)
        return
    if not _exchange(staging, dest):
        old = Path(tempfile.mkdtemp(prefix=f"{_staging_prefix(dest)}{os.getpid()}-old-", dir=dest.parent))
        os.rename(dest, old / dest.name)
        os.rename(staging, dest)
        staging = old
    shutil.rmtree(staging, ignore_errors=True)  # now the previous content
