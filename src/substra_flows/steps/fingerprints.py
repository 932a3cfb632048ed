"""Content fingerprints: how server-keyed assets (datasets, functions, samples) are recognised.

The server chooses the keys of datasets, functions and data samples, so a rerun cannot name
them in advance; it recognises them by a fingerprint of what was registered instead.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from substra_flows.exceptions import LoadDataException

__all__ = [
    "FINGERPRINT_KEY",
    "FINGERPRINT_VERSION",
    "asset_fingerprint",
    "deterministic_targz",
    "file_sha256",
    "sample_fingerprint",
]

#: metadata key under which datasets and functions carry their fingerprint
FINGERPRINT_KEY = "substra_flows_fingerprint"
FINGERPRINT_VERSION = "v1"
_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def asset_fingerprint(kind: str, fields: Mapping[str, Any]) -> str:
    """``v1:<sha256>`` over the canonical JSON of what defines an asset (fits a 100-char metadata value)."""
    canonical = json.dumps({"kind": kind, **fields}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{FINGERPRINT_VERSION}:{hashlib.sha256(canonical.encode()).hexdigest()}"


def _sample_files(folder: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, path) of every file of a sample folder, sorted; walked like the client
    zips it (symlinked files are read, symlinked folders are not entered)."""
    found: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in files:
            full = Path(root) / name
            found.append((full.relative_to(folder).as_posix(), full))
    yield from sorted(found)


def sample_fingerprint(folder: str | os.PathLike[str], field: str = "path") -> str:
    """``sha256:<hex>`` over the sorted relative paths and bytes of a sample folder's files.

    Each file contributes its path, a NUL, its size (8 bytes) and its bytes, so no two different
    folders can feed the same stream. The folder's own name is not included: two folders with the
    same files are the same sample. Raises LoadDataException for a folder without files.
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    count = 0
    for relative, full in _sample_files(folder):
        size = full.stat().st_size
        digest.update(relative.encode("utf-8") + b"\0" + size.to_bytes(8, "big"))
        with full.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        count += 1
    if count == 0:
        raise LoadDataException.for_field(
            field, str(folder), f"folder {folder} holds no file (empty samples are refused)"
        )
    return f"sha256:{digest.hexdigest()}"


def deterministic_targz(
    folder: str | os.PathLike[str], destination: str | os.PathLike[str], field: str = "archive"
) -> Path:
    """Write ``folder`` as a reproducible tar.gz: same files, same bytes, whatever the clock or owner.

    Entries are sorted, with mtime 0, uid/gid 0, no user/group names, and mode 0o755 for folders
    and executable files, 0o644 otherwise; the gzip header has mtime 0 and no file name. Symbolic
    links are refused (their target could change under the same fingerprint).
    """
    folder = Path(folder)
    destination = Path(destination)
    entries: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            full = Path(root) / name
            if full.is_symlink():
                raise LoadDataException.for_field(
                    field, str(folder), f"{full} is a symbolic link; archive a folder of plain files"
                )
            entries.append((full.relative_to(folder).as_posix(), full))
    entries.sort()
    with destination.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for relative, full in entries:
                info = tarfile.TarInfo(relative)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                mode = full.stat().st_mode
                if stat.S_ISDIR(mode):
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    archive.addfile(info)
                else:
                    info.size = full.stat().st_size
                    info.mode = 0o755 if mode & stat.S_IXUSR else 0o644
                    with full.open("rb") as handle:
                        archive.addfile(info, handle)
    return destination
