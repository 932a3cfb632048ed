"""One 0.x archive, several 1.0 functions: the Dockerfile's ENTRYPOINT names the function to run.

A 0.x algo archive held one script whose methods the platform chose on the command line
(``train`` for a traintuple, ``predict`` for a testtuple). A 1.0 function runs exactly what its
ENTRYPOINT says, and substratools 1.0 picks the registered function with ``--function-name``. So
each role of a 0.x archive becomes its own 1.0 function, whose archive is the original with
``"--function-name", "<role>"`` set on the ENTRYPOINT line. The rewritten archive is a
reproducible tar.gz (same input, same bytes), so a rerun registers identical files.

What cannot be rewritten is refused with :class:`LegacyTranslationError`: no Dockerfile at the
root, no ENTRYPOINT or several, or an ENTRYPOINT in shell form (no JSON list).
"""

from __future__ import annotations

import gzip
import io
import json
import pathlib
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

from substra_flows.legacy.exceptions import LegacyTranslationError

DOCKERFILE = "Dockerfile"
FUNCTION_NAME_FLAG = "--function-name"


@dataclass(frozen=True)
class Member:
    """One file of an archive (folders are implied by the paths)."""

    name: str
    data: bytes
    mode: int


def read_members(path: pathlib.Path, field: str) -> list[Member]:
    """The regular files of a zip or tar archive (any compression), in archive order."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return [
                Member(_clean(info.filename), archive.read(info), ((info.external_attr >> 16) & 0o777) or 0o644)
                for info in archive.infolist()
                if not info.is_dir()
            ]
    try:
        with tarfile.open(path) as archive:
            members = []
            for info in archive.getmembers():
                if info.isfile():
                    handle = archive.extractfile(info)
                    members.append(Member(_clean(info.name), handle.read() if handle else b"", info.mode & 0o777))
            return members
    except (tarfile.TarError, OSError) as error:
        raise LegacyTranslationError.for_field(
            field, str(path), f"is neither a zip nor a tar archive ({error})"
        ) from None


def _clean(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def with_function_name(dockerfile: str, function_name: str, field: str) -> str:
    """The Dockerfile with its one exec-form ENTRYPOINT set to run ``function_name``."""
    lines = dockerfile.splitlines(keepends=True)
    entrypoints = [i for i, line in enumerate(lines) if line.lstrip().upper().startswith("ENTRYPOINT")]
    if len(entrypoints) != 1:
        raise LegacyTranslationError.for_field(
            f"{field}:Dockerfile",
            f"{len(entrypoints)} ENTRYPOINT lines",
            'exactly one ENTRYPOINT line is needed, in exec form: ENTRYPOINT ["python3", "algo.py"]',
        )
    index = entrypoints[0]
    line = lines[index]
    body = line.lstrip()[len("ENTRYPOINT") :].strip()
    try:
        command = json.loads(body)
    except ValueError:
        command = None
    if not isinstance(command, list) or not command or not all(isinstance(part, str) for part in command):
        raise LegacyTranslationError.for_field(
            f"{field}:Dockerfile",
            line.strip(),
            'the ENTRYPOINT must be in exec form (a JSON list), e.g. ENTRYPOINT ["python3", "algo.py"]',
        )
    if not any(part.endswith(".py") for part in command):
        raise LegacyTranslationError.for_field(
            f"{field}:Dockerfile", line.strip(), "the ENTRYPOINT must run a Python script (substratools 1.0)"
        )
    kept: list[str] = []
    skip = False
    for part in command:
        if skip:
            skip = False
            continue
        if part == FUNCTION_NAME_FLAG:
            skip = True
            continue
        kept.append(part)
    ending = "\n" if line.endswith("\n") else ""
    lines[index] = "ENTRYPOINT " + json.dumps([*kept, FUNCTION_NAME_FLAG, function_name]) + ending
    return "".join(lines)


def role_archive(source: pathlib.Path, function_name: str, destination: pathlib.Path, field: str) -> pathlib.Path:
    """Write the archive of one role of ``source`` (its ENTRYPOINT runs ``function_name``)."""
    members = read_members(source, field)
    dockerfiles = [m for m in members if m.name == DOCKERFILE]
    if not dockerfiles:
        raise LegacyTranslationError.for_field(field, str(source), "has no Dockerfile at its root")
    text = dockerfiles[-1].data.decode("utf-8")
    rewritten = with_function_name(text, function_name, field).encode("utf-8")
    latest = {member.name: member for member in members}  # a repeated name: the last copy wins, as on extraction
    return write_targz(
        [Member(m.name, rewritten if m.name == DOCKERFILE else m.data, m.mode) for m in latest.values()], destination
    )


def write_targz(members: Sequence[Member], destination: pathlib.Path) -> pathlib.Path:
    """A reproducible tar.gz of ``members`` in this order: mtime 0, no owner, no name in the gzip header."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.size = len(member.data)
            info.mode = member.mode
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            archive.addfile(info, io.BytesIO(member.data))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0) as zipped:
        zipped.write(raw.getvalue())
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(packed.getvalue())
    return destination
