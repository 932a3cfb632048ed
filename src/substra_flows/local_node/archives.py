"""Extracting an uploaded data sample archive (zip, or tar with any compression), within limits.

Entries are checked and written one by one, counting the bytes really written (sizes announced
by an archive can lie): an archive that would extract past ``max_sample_bytes`` or hold more than
``max_sample_files`` entries (zip bombs) is refused with 413; links, device files, FIFOs,
entries escaping the folder, encrypted, corrupt or truncated archives with 400. Nothing is
left behind on a refusal.
"""

from __future__ import annotations

import io
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from .limits import NodeLimits, RequestRejected

_CHUNK = 1024 * 1024


def _decompression_errors() -> tuple[type[Exception], ...]:
    """What a corrupt compressed stream raises (zlib always; lzma when Python was built with it)."""
    try:
        import lzma
    except ImportError:  # pragma: no cover - Python built without liblzma
        return (zlib.error,)
    return (zlib.error, lzma.LZMAError)


_CORRUPT = _decompression_errors()
# RuntimeError: zipfile's "encrypted, password required"; NotImplementedError: an unknown compression
_ZIP_ERRORS: tuple[type[Exception], ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    *_CORRUPT,
)
_TAR_ERRORS: tuple[type[Exception], ...] = (tarfile.TarError, EOFError, OSError, *_CORRUPT)


class _Budget:
    """Bytes and entries left to extract."""

    def __init__(self, limits: NodeLimits) -> None:
        self.limits = limits
        self.bytes = limits.max_sample_bytes
        self.entries = limits.max_sample_files

    def entry(self) -> None:
        self.entries -= 1
        if self.entries < 0:
            raise RequestRejected(
                413,
                f"The archive holds more than {self.limits.max_sample_files} files and folders "
                "(max_sample_files); register the data by server path, or split it",
            )

    def spend(self, size: int) -> None:
        self.bytes -= size
        if self.bytes < 0:
            raise RequestRejected(
                413,
                f"The archive extracts to more than {self.limits.max_sample_bytes} bytes (max_sample_bytes); "
                "register the data by server path, or split it",
            )


def extract_sample(archive: IO[bytes], target: Path, limits: NodeLimits) -> None:
    """Extract ``archive`` into the new folder ``target``; on any refusal, ``target`` is removed."""
    target.mkdir(parents=True)
    try:
        _extract_into(archive, target, limits)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def extract_function_archive(data: bytes, target: Path, limits: NodeLimits | None = None) -> None:
    """Extract a function archive into the existing folder ``target`` (the build phase's context),
    under the same checks; a refusal is a ValueError naming the problem."""
    try:
        _extract_into(io.BytesIO(data), target, limits or NodeLimits())
    except RequestRejected as refused:
        raise ValueError(str(refused)) from None


def _extract_into(archive: IO[bytes], target: Path, limits: NodeLimits) -> None:
    archive.seek(0)
    if zipfile.is_zipfile(archive):
        archive.seek(0)
        _extract_zip(archive, target, _Budget(limits))
    else:
        archive.seek(0)
        _extract_tar(archive, target, _Budget(limits))
    if not any(p.is_file() for p in target.rglob("*")):
        raise RequestRejected(400, "The archive contains no file")


def _destination(target: Path, name: str) -> Path:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not name or name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise RequestRejected(400, f"Archive entry {name!r} escapes the archive folder")
    return target.joinpath(*parts) if parts else target


def _copy(source: IO[bytes], destination: Path, budget: _Budget, mode: int) -> None:
    """Write an entry, counting its bytes; keep its execute bits (a build may run a script from it),
    never setuid/setgid bits nor write access for others."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with destination.open("wb") as out:
        while chunk := source.read(_CHUNK):
            budget.spend(len(chunk))
            out.write(chunk)
    if mode & 0o111:
        destination.chmod(0o755)


def _extract_zip(archive: IO[bytes], target: Path, budget: _Budget) -> None:
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            for info in members:  # cheap refusals first, from the central directory
                budget.entry()
                if info.flag_bits & 0x1:
                    raise RequestRejected(400, f"Archive entry {info.filename!r} is encrypted, which is not allowed")
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise RequestRejected(400, f"Archive entry {info.filename!r} is a link, which is not allowed")
                _destination(target, info.filename)
            if sum(info.file_size for info in members) > budget.bytes:
                budget.spend(sum(info.file_size for info in members))
            for info in members:
                destination = _destination(target, info.filename)
                if info.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                with bundle.open(info) as source:
                    _copy(source, destination, budget, info.external_attr >> 16)
    except _ZIP_ERRORS as error:
        raise RequestRejected(400, f"The zip archive is corrupt or unsupported: {error}") from None


def _extract_tar(archive: IO[bytes], target: Path, budget: _Budget) -> None:
    seen = 0
    try:
        with tarfile.open(fileobj=archive, mode="r:*") as bundle:
            for member in bundle:  # streamed: a huge member list is refused before it is all read
                seen += 1
                budget.entry()
                destination = _destination(target, member.name)
                if member.issym() or member.islnk():
                    raise RequestRejected(400, f"Archive entry {member.name!r} is a link, which is not allowed")
                if member.isdir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    kind = "a device file" if member.ischr() or member.isblk() else "a FIFO or special file"
                    raise RequestRejected(400, f"Archive entry {member.name!r} is {kind}, which is not allowed")
                if member.size > budget.bytes:
                    budget.spend(member.size)
                source = bundle.extractfile(member)
                assert source is not None
                with source:
                    _copy(source, destination, budget, member.mode)
    except _TAR_ERRORS as error:
        if seen == 0 and isinstance(error, tarfile.ReadError):
            raise RequestRejected(400, "Archive must be zip or tar.*") from None
        raise RequestRejected(400, f"The tar archive is corrupt or truncated: {error}") from None
