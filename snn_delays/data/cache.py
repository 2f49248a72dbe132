"""A binned-data cache on disk: preprocess once, memory-map on every later use.

An entry is a folder ``<cache_dir>/<label>-<key[:20]>/`` holding one ``.npy`` file per array and
``meta.json``. The key is the SHA-256 of every preprocessing parameter together with the source
files' checksums, so a changed parameter or a changed source file builds a new entry. Each file
is written to a temporary name and moved into place with ``os.replace``; ``meta.json`` is written
last and lists every array's shape and dtype, so a partial entry (a crash mid-build) or a stale one
is never used: it is rebuilt.

Arrays come back as copy-on-write memory maps (``mmap_mode="c"``): torch can wrap them without a
copy, and nothing a caller writes reaches the file.

The cache folder: the ``cache_dir`` option, else ``$SNN_DELAYS_CACHE``, else ``./data_cache``;
``"off"`` keeps everything in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from neuromorphic_export._io import atomic_write

from .checksums import file_digest

__all__ = ["resolve_cache_dir", "cache_key", "source_checksum", "folder_fingerprint", "load_or_build",
           "build_lock"]

FORMAT_VERSION = 1


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path | None:
    """The cache folder for an option value ("" = default, "off" = no disk cache)."""
    value = str(cache_dir or "")
    if value.lower() in ("off", "none", "no"):
        return None
    if value:
        return Path(value)
    env = os.environ.get("SNN_DELAYS_CACHE")
    return Path(env) if env else Path.cwd() / "data_cache"


def cache_key(params: dict[str, Any]) -> str:
    """SHA-256 of the parameters (JSON with sorted keys) and the cache format version."""
    blob = json.dumps({"format": FORMAT_VERSION, **params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def source_checksum(path: str | os.PathLike, cache_dir: Path | None) -> str:
    """MD5 of a source file, remembered in ``cache_dir/checksums.json`` by (size, mtime) so a large
    file is hashed once, not at every open."""
    path = Path(path).resolve()
    st = path.stat()
    memo_key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    memo_file = cache_dir / "checksums.json" if cache_dir is not None else None
    memo: dict[str, str] = {}
    if memo_file is not None and memo_file.exists():
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, ValueError):
            memo = {}
        if memo_key in memo:
            return memo[memo_key]
    digest = "md5:" + file_digest(path, "md5")
    if memo_file is not None:
        try:
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            memo[memo_key] = digest
            atomic_write(memo_file, lambda f: f.write(json.dumps(memo, indent=0)), mode="w")
        except OSError:
            pass  # a read-only cache folder only costs a re-hash next time
    return digest


@contextlib.contextmanager
def build_lock(target: Path, what: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``target`` + ``.lock`` while building it, so that processes that
    need the same long build (``cv``/``ablate`` workers opening FSDD spikes for the first time)
    build it once: the others wait, then find it built. An advisory ``flock``, released when the
    process ends however it ends; without ``fcntl`` (Windows) no lock is taken. (Not
    :class:`snn_delays.workers.FolderLock`: that one claims a grid cell or gives up, with stale
    locks to break; a build must be waited for, and flock needs no stale-lock handling.)

    The lock file is removed when the lock is let go (normally, on an error, on Ctrl-C), while it is
    still held; a waiter that then holds a lock on the removed file sees that the name now leads to
    another file (or none) and locks that one instead. Only a process killed outright (SIGKILL)
    leaves the file, empty and unlocked: harmless, and removed by the next build."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock = Path(target).with_name(Path(target).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    told = False
    while True:
        f = open(lock, "a")
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not told:
                    print(f"waiting for another process building {what or target}", file=sys.stderr, flush=True)
                    told = True
                fcntl.flock(f, fcntl.LOCK_EX)  # Ctrl-C here raises KeyboardInterrupt, holding nothing
            try:
                st, mine = os.stat(lock), os.fstat(f.fileno())
                current = (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
            except FileNotFoundError:
                current = False
        except BaseException:
            f.close()
            raise
        if current:
            break
        f.close()  # the previous holder removed this file as it let go: lock the one at the name now
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()  # while still holding it (see above)
        f.close()  # lets go of the lock


def folder_fingerprint(files: list[Path], base: Path) -> str:
    """SHA-256 over (relative path, size, mtime) of many files: a cheap checksum for a folder of
    recordings (hashing every byte of 100k WAV files at each open would dominate loading)."""
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(base).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return "files:" + h.hexdigest()


def _entry_is_complete(entry: Path, key: str) -> dict[str, Any] | None:
    meta_file = entry / "meta.json"
    if not meta_file.exists():
        return None
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("key") != key:
        return None
    for name, spec in meta.get("arrays", {}).items():
        f = entry / f"{name}.npy"
        if not f.exists():
            return None
        try:
            arr = np.load(f, mmap_mode="r")
        except (OSError, ValueError):
            return None
        if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
            return None
    return meta


def load_or_build(
    cache_dir: Path | None,
    label: str,
    params: dict[str, Any],
    build: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Return ``(arrays, info)``: memory-mapped from a complete cache entry keyed by ``params``, else
    from ``build()`` (which returns the arrays and a JSON-able info dict), saved for next time."""
    key = cache_key(params)
    if cache_dir is None:
        return build()
    entry = Path(cache_dir) / f"{label}-{key[:20]}"
    meta = _entry_is_complete(entry, key)
    if meta is not None:
        arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="c") for name in meta["arrays"]}
        return arrays, meta["info"]
    arrays, info = build()
    written: list[Path] = []
    existed = entry.is_dir()
    try:
        entry.mkdir(parents=True, exist_ok=True)
        stale = entry / "meta.json"
        if stale.exists():
            stale.unlink()  # the entry is being rewritten: never valid half-way
        for name, arr in arrays.items():
            arr = np.ascontiguousarray(arr)
            atomic_write(entry / f"{name}.npy", lambda f, a=arr: np.save(f, a, allow_pickle=False))
            written.append(entry / f"{name}.npy")
        meta = {
            "key": key,
            "params": params,
            "arrays": {n: {"shape": list(a.shape), "dtype": str(a.dtype)} for n, a in arrays.items()},
            "info": info,
        }
        atomic_write(entry / "meta.json", lambda f: f.write(json.dumps(meta, indent=1, default=str)), mode="w")
    except OSError:
        return arrays, info  # cannot write the cache (read-only disk): use the arrays in memory
    except BaseException:  # Ctrl-C, SIGTERM (as SystemExit) half-way: leave no half-written entry behind
        for f in written:
            with contextlib.suppress(OSError):
                f.unlink()
        if not existed:
            with contextlib.suppress(OSError):
                entry.rmdir()  # only if empty
        raise
    arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="c") for name in arrays}
    return arrays, info
