"""Fetch, verify and unpack the official dataset files.

Where a network exists, :func:`fetch` downloads a file to a temporary name, verifies its
checksum and moves it into place (:func:`neuromorphic_export._io.atomic_path`); a file already present
is verified and used, never fetched again. Offline, or on a checksum mismatch, it raises :class:`DatasetError` naming the
file, the address to get it from and the folder to put it in.

Checksums are those published with the data (see ``datasets/README.md``).
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from neuromorphic_export._io import atomic_path, atomic_write

from .checksums import file_digest
from .registry import DatasetError
from .spikefile import read_spike_file

__all__ = ["RemoteFile", "REMOTE", "fetch", "unpack", "missing_message", "download_dataset", "default_root"]

_HEIDELBERG_HOSTS = ("https://zenkelab.org/datasets/", "https://compneuro.net/datasets/")


@dataclass(frozen=True)
class RemoteFile:
    """One published file: its name, where it lives, and its checksum (``algo:hex``)."""

    name: str
    urls: tuple[str, ...]
    checksum: str


def _heidelberg(name: str, md5: str) -> RemoteFile:
    return RemoteFile(name, tuple(h + name for h in _HEIDELBERG_HOSTS), "md5:" + md5)


REMOTE: dict[str, list[RemoteFile]] = {
    "shd": [
        _heidelberg("shd_train.h5.zip", "f3252aeb598ac776c1b526422d90eecb"),
        _heidelberg("shd_test.h5.zip", "1503a5064faa34311c398fb0a1ed0a6f"),
    ],
    "ssc": [
        _heidelberg("ssc_train.h5.zip", "d102be95e7144fcc0553d1f45ba94170"),
        _heidelberg("ssc_valid.h5.zip", "b4eee3516a4a90dd0c71a6ac23a8ae43"),
        _heidelberg("ssc_test.h5.zip", "a35ff1e9cffdd02a20eb850c17c37748"),
    ],
    "gsc": [
        RemoteFile(
            "speech_commands_v0.02.tar.gz",
            ("http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",),
            "sha256:af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
        )
    ],
}

# Checksums of other published forms of the same files (gz archives, unpacked HDF5).
KNOWN_CHECKSUMS: dict[str, str] = {
    "shd_train.h5.gz": "md5:d47c9825dee33347913e8ce0f2be08b0",
    "shd_test.h5.gz": "md5:3062a80ec0c5719404d5b02e166543b1",
    "shd_train.h5": "md5:8e9877c85f29a28dd353ea6a54402667",
    "shd_test.h5": "md5:207ad1295a0ab611e22d1734989c254e",
}


def default_root() -> Path:
    """The default data folder: ``datasets/`` of the source tree (holds the README with checksums)."""
    return Path(__file__).resolve().parents[2] / "datasets"


def _verify(path: Path, checksum: str) -> bool:
    algo, _, expected = checksum.partition(":")
    return file_digest(path, algo) == expected


def missing_message(remote: RemoteFile, folder: Path, reason: str = "") -> str:
    algo, _, hexd = remote.checksum.partition(":")
    lines = [f"{remote.name} is needed in {folder}" + (f" ({reason})" if reason else "") + "."]
    lines.append(f"Get it from {remote.urls[0]}" + (f" (mirror {', '.join(remote.urls[1:])})" if remote.urls[1:] else ""))
    lines.append(f"and put it in {folder} ({algo.upper()} {hexd}); or run "
                 f"`snn-delays data download {_dataset_of(remote)} --data-dir {folder}` where a network exists.")
    return "\n".join(lines)


def _dataset_of(remote: RemoteFile) -> str:
    for name, files in REMOTE.items():
        if remote in files:
            return name
    return "?"


class _WrongChecksum(Exception):
    """A downloaded file's checksum differs from the published one (the download is dropped)."""


def fetch(remote: RemoteFile, folder: str | os.PathLike, timeout_s: float = 60.0) -> Path:
    """Return ``folder/remote.name``, downloading it first if absent; verify its checksum either way.

    Raises DatasetError (naming the file, the address and the folder) offline or on a mismatch.
    """
    folder = Path(folder)
    target = folder / remote.name
    if target.exists():
        if not _verify(target, remote.checksum):
            raise DatasetError(
                missing_message(remote, folder, f"the file present has the wrong checksum: it is corrupt or "
                                                f"truncated; delete {target} and fetch it again")
            )
        return target
    errors = []
    for url in remote.urls:
        try:
            with atomic_path(target) as tmp:  # replaces target only if the block finishes
                with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
                    shutil.copyfileobj(resp, out, 1 << 22)
                if not _verify(Path(tmp), remote.checksum):
                    raise _WrongChecksum(url)
            return target
        except _WrongChecksum:
            errors.append(f"{url}: downloaded file has the wrong checksum")
        except (urllib.error.URLError, OSError, ValueError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
    raise DatasetError(missing_message(remote, folder, "download failed: " + "; ".join(errors)))


def unpack(archive: str | os.PathLike, dest_dir: str | os.PathLike | None = None) -> Path:
    """Unpack ``NAME.h5.gz`` / ``NAME.h5.zip`` to ``NAME.h5`` (atomically) or a ``.tar.gz`` into a folder.

    Returns the unpacked file (or the folder for a tar archive). A corrupt archive raises DatasetError.
    """
    archive = Path(archive)
    dest_dir = Path(dest_dir) if dest_dir is not None else archive.parent
    name = archive.name
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        if name.endswith(".tar.gz") or name.endswith(".tgz"):
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(dest_dir, filter="data")
            return dest_dir
        if name.endswith(".gz"):
            target = dest_dir / name[: -len(".gz")]
            with gzip.open(archive, "rb") as src:
                _copy_atomic(src, target)
            return target
        if name.endswith(".zip"):
            target = dest_dir / name[: -len(".zip")]
            with zipfile.ZipFile(archive) as zf:
                members = [m for m in zf.namelist() if not m.endswith("/") and not m.startswith("__MACOSX")]
                member = next((m for m in members if Path(m).name == target.name), members[0] if members else None)
                if member is None:
                    raise DatasetError(f"{archive} is an empty zip archive; delete it and fetch it again")
                with zf.open(member) as src:
                    _copy_atomic(src, target)
            return target
    except OSError as e:
        if e.errno in _WRITE_ERRNOS:  # our side, not the archive's: say so
            raise DatasetError(f"cannot unpack {archive} into {dest_dir}: {e.strerror} ({e.filename or dest_dir})") from None
        raise DatasetError(f"{archive} cannot be unpacked ({e}): it is corrupt or truncated; delete it and "
                           "fetch it again") from None
    except (EOFError, zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile) as e:
        raise DatasetError(f"{archive} cannot be unpacked ({e}): it is corrupt or truncated; delete it and "
                           "fetch it again") from None
    raise DatasetError(f"{archive}: unknown archive type (expected .h5.gz, .h5.zip or .tar.gz)")


# errno values that mean the destination cannot be written (full disk, quota, permissions, read-only)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def _copy_atomic(src, target: Path) -> None:
    """Stream ``src`` (a binary file object) into ``target`` atomically."""
    atomic_write(target, lambda out: shutil.copyfileobj(src, out, 1 << 22))


def download_dataset(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Fetch (or verify) every official file of ``name`` into ``root`` and unpack it there."""
    if name not in REMOTE:
        raise DatasetError(f"nothing to download for {name!r}; downloadable: {', '.join(sorted(REMOTE))}"
                           + (" (FSDD is read from its folder: --data-dir DIR)" if name == "fsdd" else ""))
    root = Path(root) if root else default_root()
    if root.exists() and not root.is_dir():
        raise DatasetError(f"--data-dir {root} is a file, not a folder")
    out = []
    for remote in REMOTE[name]:
        if name != "gsc":
            h5 = root / remote.name[: -len(".zip")]
            if h5.exists() and not (root / remote.name).exists():
                out.append(_verify_unpacked(h5))  # already unpacked: verify it, never fetch again
                continue
        archive = fetch(remote, root)
        if name == "gsc":
            dest = root / "speech_commands_v0.02"
            if not (dest / "testing_list.txt").exists():
                unpack(archive, dest)
            out.append(dest)
        else:
            h5 = root / remote.name[: -len(".zip")]
            if not h5.exists():
                unpack(archive, root)
            out.append(h5)
    return out


def _verify_unpacked(h5: Path) -> Path:
    """Check an unpacked HDF5 file: its published MD5 where one exists, else its layout."""
    known = KNOWN_CHECKSUMS.get(h5.name)
    if known is not None:
        if not _verify(h5, known):
            raise DatasetError(f"{h5} has the wrong checksum (expected {known}): it is corrupt or truncated; "
                               "delete it and run the download again")
        return h5
    read_spike_file(h5)  # raises a DatasetError naming the file if it is not a valid Heidelberg file
    return h5
