"""Pure parts of the steps: content fingerprints and the reproducible tar.gz."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from substra_flows import exceptions as exc
from substra_flows.steps import asset_fingerprint, deterministic_targz, file_sha256, sample_fingerprint


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def test_sample_fingerprint_depends_on_content_and_relative_paths_only(tmp_path: Path):
    a = _folder(tmp_path / "a", {"data.csv": b"x,y\n1,2\n", "sub/more.csv": b"3"})
    b = _folder(tmp_path / "elsewhere" / "b", {"sub/more.csv": b"3", "data.csv": b"x,y\n1,2\n"})
    assert sample_fingerprint(a) == sample_fingerprint(b)
    assert sample_fingerprint(a).startswith("sha256:")
    os.utime(b / "data.csv", (0, 0))
    assert sample_fingerprint(a) == sample_fingerprint(b), "mtimes do not count"


@pytest.mark.parametrize(
    "other",
    [
        {"data.csv": b"x,y\n1,3\n", "sub/more.csv": b"3"},  # one byte changed
        {"data2.csv": b"x,y\n1,2\n", "sub/more.csv": b"3"},  # renamed
        {"data.csv": b"x,y\n1,2\n"},  # file removed
        {"data.csv": b"x,y\n1,2\n3", "sub/more.csv": b""},  # bytes moved across files
    ],
)
def test_sample_fingerprint_changes_with_any_change(tmp_path: Path, other: dict[str, bytes]):
    a = _folder(tmp_path / "a", {"data.csv": b"x,y\n1,2\n", "sub/more.csv": b"3"})
    assert sample_fingerprint(a) != sample_fingerprint(_folder(tmp_path / "b", other))


def test_an_empty_sample_folder_is_refused(tmp_path: Path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(exc.LoadDataException) as raised:
        sample_fingerprint(tmp_path / "empty", "sample_paths.0")
    assert raised.value.field == "sample_paths.0"
    assert str(tmp_path / "empty") in str(raised.value)


def test_deterministic_targz_gives_the_same_bytes_whatever_the_mtimes(tmp_path: Path):
    folder = _folder(tmp_path / "fn", {"Dockerfile": b"FROM python\n", "src/function.py": b"print(1)\n"})
    (folder / "run.sh").write_bytes(b"#!/bin/sh\n")
    (folder / "run.sh").chmod(0o700)
    first = deterministic_targz(folder, tmp_path / "one.tar.gz")
    for path in folder.rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    second = deterministic_targz(folder, tmp_path / "two.tar.gz")
    assert first.read_bytes() == second.read_bytes()
    assert file_sha256(first) == file_sha256(second)

    raw = first.read_bytes()
    assert raw[4:8] == b"\0\0\0\0", "gzip header mtime is 0"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw))) as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == ["Dockerfile", "run.sh", "src", "src/function.py"]
        assert {m.mtime for m in members} == {0}
        assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
        modes = {m.name: m.mode for m in members}
        assert modes == {"Dockerfile": 0o644, "run.sh": 0o755, "src": 0o755, "src/function.py": 0o644}
        assert archive.extractfile("src/function.py").read() == b"print(1)\n"


def test_deterministic_targz_changes_with_content(tmp_path: Path):
    a = deterministic_targz(_folder(tmp_path / "a", {"Dockerfile": b"FROM a\n"}), tmp_path / "a.tar.gz")
    b = deterministic_targz(_folder(tmp_path / "b", {"Dockerfile": b"FROM b\n"}), tmp_path / "b.tar.gz")
    assert file_sha256(a) != file_sha256(b)


def test_deterministic_targz_refuses_symlinks(tmp_path: Path):
    folder = _folder(tmp_path / "fn", {"Dockerfile": b"FROM python\n"})
    (folder / "link").symlink_to(folder / "Dockerfile")
    with pytest.raises(exc.LoadDataException, match="symbolic link"):
        deterministic_targz(folder, tmp_path / "x.tar.gz")


def test_asset_fingerprint_is_canonical_and_fits_a_metadata_value():
    one = asset_fingerprint("dataset", {"name": "n", "opener_sha256": "ab", "permissions": {"public": False}})
    two = asset_fingerprint("dataset", {"permissions": {"public": False}, "opener_sha256": "ab", "name": "n"})
    assert one == two
    assert one.startswith("v1:") and len(one) <= 100
    assert one != asset_fingerprint("function", {"name": "n", "opener_sha256": "ab", "permissions": {"public": False}})
    assert one != asset_fingerprint("dataset", {"name": "n2", "opener_sha256": "ab", "permissions": {"public": False}})
