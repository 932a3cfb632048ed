"""The local node's HTTP edge under hostile or careless input: every refusal is a 4xx with a JSON body.

One node of our own with small limits (oversized inputs stay small here; benchmarks/node_limits.py
goes bigger and measures time and memory). Raw HTTP and raw sockets, since the client would refuse
most of these inputs before sending them.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import tarfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from substra_flows.local_node import LocalNode, NodeLimits, NodeOrganization

pytestmark = pytest.mark.live

KiB = 1024
LIMITS = NodeLimits(
    max_body_bytes=256 * KiB,
    max_json_bytes=64 * KiB,
    max_json_depth=32,
    max_sample_bytes=512 * KiB,
    max_sample_files=50,
    header_timeout=1.0,
    body_timeout=3.0,
    body_idle_timeout=1.0,
    max_connections=40,
)
ACCEPT = "application/json;version=0.0"


class Records(logging.Handler):
    """Every log record of the node's loggers (uvicorn's included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    with LocalNode(organizations=2, limits=LIMITS, run_tasks=False) as started:
        yield started


@pytest.fixture(scope="module")
def org(node: LocalNode) -> NodeOrganization:
    return node.organizations[0]


@pytest.fixture()
def node_logs() -> Iterator[Records]:
    handler = Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "substra_flows.local_node")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


def _headers(org: NodeOrganization) -> dict[str, str]:
    return {"Authorization": f"Token {org.token}", "Accept": ACCEPT}


@pytest.fixture(scope="module")
def dataset_key(org: NodeOrganization) -> str:
    files = {"data_opener": ("opener.py", b"# opener\n"), "description": ("description.md", b"# d\n")}
    spec = {"name": "limits dataset", "permissions": {"public": False, "authorized_ids": []}}
    answer = requests.post(
        f"{org.url}/data_manager/", files=files, data={"json": json.dumps(spec)}, headers=_headers(org), timeout=10
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["key"])


@pytest.fixture(scope="module")
def function_key(org: NodeOrganization) -> str:
    """A function with one optional model input and one model output (never run: run_tasks=False)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("Dockerfile", "FROM python:3.11\n")
        bundle.writestr("function.py", "print('never run')\n")
    spec = {
        "name": "limits function",
        "inputs": {"model": {"kind": "ASSET_MODEL", "optional": True, "multiple": False}},
        "outputs": {"model": {"kind": "ASSET_MODEL", "multiple": False}},
        "permissions": {"public": True, "authorized_ids": []},
    }
    files = {"file": ("function.zip", buffer.getvalue()), "description": ("description.md", b"# f\n")}
    answer = requests.post(
        f"{org.url}/function/", files=files, data={"json": json.dumps(spec)}, headers=_headers(org), timeout=10
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["key"])


@pytest.fixture(scope="module")
def plan_key(org: NodeOrganization) -> str:
    body = {"key": str(uuid.uuid4()), "name": "limits plan"}
    answer = requests.post(f"{org.url}/compute_plan/", json=body, headers=_headers(org), timeout=10)
    assert answer.status_code == 201, answer.text
    return body["key"]


# -- archives ----------------------------------------------------------------------------------------


def _tar(*members: tarfile.TarInfo, mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as bundle:
        for member in members:
            bundle.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return buffer.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, data in entries:
            bundle.writestr(name, data)
    return buffer.getvalue()


def _corrupt_zip() -> bytes:
    data = bytearray(_zip([("a.csv", b"hello world " * 200)]))
    data[40:50] = b"\xff" * 10  # inside the compressed stream: the CRC no longer matches
    return bytes(data)


def _unknown_compression_zip() -> bytes:
    data = bytearray(_zip([("a.csv", b"abc")]))
    for header in (b"PK\x03\x04", b"PK\x01\x02"):  # method field of the local and the central header
        at = data.find(header)
        offset = 8 if header == b"PK\x03\x04" else 10
        data[at + offset : at + offset + 2] = (99).to_bytes(2, "little")
    return bytes(data)


def _encrypted_zip() -> bytes:
    data = bytearray(_zip([("a.csv", b"abc")]))
    for header, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # general-purpose flags, bit 0
        at = data.find(header)
        data[at + offset] |= 0x1
    return bytes(data)


def _truncated_tgz() -> bytes:
    return _tar(_member("a.csv", size=200_000), _member("b.csv", size=200_000), mode="w:gz")[:-300]


def _upload(org: NodeOrganization, dataset: str, archive: bytes, spec: Any = None) -> requests.Response:
    body = json.dumps({"data_manager_keys": [dataset]}) if spec is None else spec
    return requests.post(
        f"{org.url}/data_sample/",
        files={"sample": ("sample.bin", archive)},
        data={"json": body},
        headers=_headers(org),
        timeout=30,
    )


# -- malformed input: 4xx with JSON, never a 500 or a traceback ----------------------------------------

DEEP = "[" * 50_000 + "]" * 50_000


def _task(function_key: str, plan: str, org: NodeOrganization, **fields: Any) -> dict[str, Any]:
    task = {
        "key": str(uuid.uuid4()),
        "function_key": function_key,
        "compute_plan_key": plan,
        "worker": org.organization_id,
        "inputs": [],
        "outputs": {"model": {"permissions": {"public": False, "authorized_ids": [org.organization_id]}}},
    }
    task.update(fields)
    return task


def _malformed(org: NodeOrganization, dataset: str, plan: str, fn: str) -> dict[str, dict[str, Any]]:
    """name -> requests.request keywords. Each reaches the code it used to crash (500, traceback),
    or answered a non-JSON 4xx (the last two)."""
    json_type = {**_headers(org), "Content-Type": "application/json"}
    own = str(org.servermedias_root)
    bulk = f"{org.url}/task/bulk_create/"

    def sample(archive: bytes) -> dict[str, Any]:
        return {
            "method": "POST",
            "url": f"{org.url}/data_sample/",
            "files": {"s": ("s", archive)},
            "data": {"json": json.dumps({"data_manager_keys": [dataset]})},
        }

    return {
        "deep JSON body": {"method": "POST", "url": f"{org.url}/compute_plan/", "data": DEEP, "headers": json_type},
        "deep JSON in a multipart field": {**sample(_zip([("a", b"1")])), "data": {"json": '{"a":' + DEEP + "}"}},
        "NUL byte in a server path": {
            "method": "POST",
            "url": f"{org.url}/data_sample/",
            "json": {"path": own + "/a\x00b", "data_manager_keys": [dataset]},
        },
        "lone surrogate in a server path": {
            "method": "POST",
            "url": f"{org.url}/data_sample/",
            "data": json.dumps({"path": own + "/", "data_manager_keys": [dataset]}).replace('/"', '/\\ud800"', 1),
            "headers": json_type,
        },
        "server path too long": {
            "method": "POST",
            "url": f"{org.url}/data_sample/",
            "json": {"path": own + "/" + "a" * 5000, "data_manager_keys": [dataset]},
        },
        "object as a dataset key": {
            "method": "POST",
            "url": f"{org.url}/data_sample/",
            "json": {"path": own, "data_manager_keys": [{}]},
        },
        "object as a dataset key, multipart": {
            **sample(_zip([("a", b"1")])),
            "data": {"json": json.dumps({"data_manager_keys": [{}]})},
        },
        "tar with a device file": {**sample(_tar(_member("dev", tarfile.CHRTYPE), _member("a.csv", size=1)))},
        "tar with a FIFO": {**sample(_tar(_member("fifo", tarfile.FIFOTYPE)))},
        "corrupt zip": {**sample(_corrupt_zip())},
        "zip with an unknown compression": {**sample(_unknown_compression_zip())},
        "encrypted zip": {**sample(_encrypted_zip())},
        "truncated tar.gz": {**sample(_truncated_tgz())},
        "list as a task's plan key": {"method": "POST", "url": bulk, "json": {"tasks": [_task(fn, [1], org)]}},
        "list as a task's function key": {"method": "POST", "url": bulk, "json": {"tasks": [_task([1], plan, org)]}},
        "list as an input identifier": {
            "method": "POST",
            "url": bulk,
            "json": {"tasks": [_task(fn, plan, org, inputs=[{"identifier": [1], "asset_key": dataset}])]},
        },
        "list as a parent task key": {
            "method": "POST",
            "url": bulk,
            "json": {
                "tasks": [
                    _task(
                        fn,
                        plan,
                        org,
                        inputs=[
                            {
                                "identifier": "model",
                                "asset_key": None,
                                "parent_task_key": [1],
                                "parent_task_output_identifier": "model",
                            }
                        ],
                    )
                ]
            },
        },
        "text as a task output": {
            "method": "POST",
            "url": bulk,
            "json": {"tasks": [_task(fn, plan, org, outputs={"model": "public"})]},
        },
        "object in public authorized_ids": {
            "method": "POST",
            "url": f"{org.url}/data_manager/",
            "files": {"data_opener": ("o.py", b"#"), "description": ("d.md", b"#")},
            "data": {"json": json.dumps({"name": "x", "permissions": {"public": True, "authorized_ids": [{}]}})},
        },
        "multipart without a boundary": {
            "method": "POST",
            "url": f"{org.url}/data_sample/",
            "data": b"x",
            "headers": {**_headers(org), "Content-Type": "multipart/form-data"},
        },
        "unsupported method": {"method": "PATCH", "url": f"{org.url}/compute_plan/{plan}/"},
    }


MALFORMED = [
    "deep JSON body",
    "deep JSON in a multipart field",
    "NUL byte in a server path",
    "lone surrogate in a server path",
    "server path too long",
    "object as a dataset key",
    "object as a dataset key, multipart",
    "tar with a device file",
    "tar with a FIFO",
    "corrupt zip",
    "zip with an unknown compression",
    "encrypted zip",
    "truncated tar.gz",
    "list as a task's plan key",
    "list as a task's function key",
    "list as an input identifier",
    "list as a parent task key",
    "text as a task output",
    "object in public authorized_ids",
    "multipart without a boundary",
    "unsupported method",
]


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_input_is_a_4xx_with_a_json_body(node, org, dataset_key, plan_key, function_key, node_logs, case):
    request = _malformed(org, dataset_key, plan_key, function_key)[case]
    request.setdefault("headers", _headers(org))
    answer = requests.request(timeout=30, **request)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    assert "json" in answer.headers["Content-Type"], answer.headers
    assert isinstance(answer.json()["detail"], str) and answer.json()["detail"]
    assert "Traceback" not in answer.text
    assert not [r for r in node_logs.records if r.exc_info], [r.getMessage() for r in node_logs.records]
    uploads = node.api.workdir / "uploaded-samples"
    assert not uploads.exists() or list(uploads.iterdir()) == [], "a refused archive left files behind"


def test_malformed_answers_name_the_field_and_the_value(org, dataset_key):
    answer = requests.post(
        f"{org.url}/data_sample/", json={"paths": [[1]], "data_manager_keys": [dataset_key]}, headers=_headers(org)
    )
    assert answer.status_code == 400
    assert answer.json()["detail"] == "paths: expected a list of strings, got list [[1]]"


def test_a_deeply_nested_metadata_filter_is_ignored_like_any_malformed_filter(org, plan_key, node_logs):
    answer = requests.get(f"{org.url}/compute_plan/", params={"metadata": "[" * 3000}, headers=_headers(org))
    assert answer.status_code == 200 and plan_key in [p["key"] for p in answer.json()["results"]]
    assert not [r for r in node_logs.records if r.exc_info]


# -- body size -------------------------------------------------------------------------------------------


def test_an_announced_oversized_json_body_is_413_before_it_is_read(org):
    with socket.create_connection(("127.0.0.1", int(org.url.split(":")[2].split("/")[0])), timeout=10) as sock:
        head = (
            f"POST /{org.name}/compute_plan/ HTTP/1.1\r\nHost: x\r\nAuthorization: Token {org.token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n"
        )
        sock.sendall(head.encode())  # and no body at all: the answer must not wait for it
        answer = _read_one_answer(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["detail"] == (
        "Request body too large: it announces 1073741824 bytes; this node accepts at most 65536 (max_json_bytes)"
    )


def test_a_chunked_json_body_over_the_limit_is_413(org):
    def chunks() -> Iterator[bytes]:
        yield b'{"key": "' + str(uuid.uuid4()).encode() + b'", "name": "'
        for _ in range(100):
            yield b"x" * KiB
        yield b'"}'

    answer = requests.post(
        f"{org.url}/compute_plan/", data=chunks(), headers={**_headers(org), "Content-Type": "application/json"}
    )
    assert answer.status_code == 413
    assert "larger than 65536 bytes" in answer.json()["detail"] and "max_json_bytes" in answer.json()["detail"]


def test_an_upload_over_max_body_bytes_is_413(org, dataset_key):
    answer = _upload(org, dataset_key, os.urandom(300 * KiB))
    assert answer.status_code == 413
    assert "at most 262144 (max_body_bytes)" in answer.json()["detail"]


def test_a_zip_bomb_is_413_and_leaves_nothing(node, org, dataset_key):
    bomb = _zip([("zeros.csv", b"\0" * (4 * 1024 * KiB))])  # 4 MiB of zeros in a few KiB
    assert len(bomb) < 64 * KiB
    answer = _upload(org, dataset_key, bomb)
    assert answer.status_code == 413
    assert "extracts to more than 524288 bytes (max_sample_bytes)" in answer.json()["detail"]
    assert list((node.api.workdir / "uploaded-samples").iterdir()) == []


def test_an_archive_lying_about_its_sizes_is_still_stopped(node, org, dataset_key):
    data = bytearray(_zip([("zeros.csv", b"\0" * (2 * 1024 * KiB))]))
    for header, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed size: claim 10 bytes
        at = data.find(header)
        data[at + offset : at + offset + 4] = (10).to_bytes(4, "little")
    answer = _upload(org, dataset_key, bytes(data))
    assert 400 <= answer.status_code < 500 and "json" in answer.headers["Content-Type"]
    assert list((node.api.workdir / "uploaded-samples").iterdir()) == []


def test_an_archive_with_too_many_files_is_413(node, org, dataset_key):
    many = _tar(*[_member(f"f{i}.csv", size=1) for i in range(60)])
    answer = _upload(org, dataset_key, many)
    assert answer.status_code == 413
    assert "more than 50 files and folders (max_sample_files)" in answer.json()["detail"]
    assert list((node.api.workdir / "uploaded-samples").iterdir()) == []


def test_an_archive_within_the_limits_is_registered(org, dataset_key):
    answer = _upload(org, dataset_key, _tar(_member("a.csv", size=10), _member("sub", tarfile.DIRTYPE)))
    assert answer.status_code == 201, answer.text


# -- server paths ------------------------------------------------------------------------------------------


def _register_path(org: NodeOrganization, dataset: str, path: Path, **extra: Any) -> requests.Response:
    body = {"path": str(path), "data_manager_keys": [dataset], **extra}
    return requests.post(f"{org.url}/data_sample/", json=body, headers=_headers(org), timeout=10)


def _sample_folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "data.csv").write_text("x,y\n1,2\n")
    return folder


def test_an_organization_registers_only_its_own_server_paths(node, dataset_key):
    org1, org2 = node.organizations
    assert org1.servermedias_root != org2.servermedias_root
    files = {"data_opener": ("o.py", b"#"), "description": ("d.md", b"#")}
    spec = json.dumps({"name": "org-2 dataset"})
    answer = requests.post(
        f"{org2.url}/data_manager/", files=files, data={"json": spec}, headers=_headers(org2), timeout=10
    )
    dataset2 = answer.json()["key"]
    theirs = _sample_folder(org1.servermedias_root, f"private-{uuid.uuid4()}")
    refused = _register_path(org2, dataset2, theirs)
    assert refused.status_code == 400
    assert "is not inside the server media folder of org-2" in refused.json()["detail"]
    for root in (node.servermedias_root, org2.servermedias_root):  # nor a root itself
        _sample_folder(root, f"any-{uuid.uuid4()}")
        assert _register_path(org2, dataset2, root).status_code == 400
    ours = _sample_folder(org2.servermedias_root, f"own-{uuid.uuid4()}")
    assert _register_path(org2, dataset2, ours).status_code == 201
    many = org2.servermedias_root / f"many-{uuid.uuid4()}"
    for i in range(2):
        _sample_folder(many, f"s{i}")
    assert len(_register_path(org2, dataset2, many, multiple=True).json()) == 2


@pytest.mark.parametrize("kind", ["file link", "folder link", "fifo", "link as the path"])
def test_links_and_special_files_in_a_server_path_are_refused(org, dataset_key, tmp_path, kind):
    secret = tmp_path / "secret.csv"
    secret.write_text("private\n")
    folder = _sample_folder(org.servermedias_root, f"linked-{uuid.uuid4()}")
    path = folder
    if kind == "file link":
        (folder / "more.csv").symlink_to(secret)
    elif kind == "folder link":
        (folder / "deeper").mkdir()
        (folder / "deeper" / "elsewhere").symlink_to(tmp_path)
    elif kind == "fifo":
        os.mkfifo(folder / "pipe")
    else:
        path = org.servermedias_root / f"alias-{uuid.uuid4()}"
        path.symlink_to(folder)
    answer = _register_path(org, dataset_key, path)
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert ("symbolic link" in detail) if kind != "fifo" else ("pipe, which is not a regular file" in detail)


# -- slow and half-open connections ---------------------------------------------------------------------------


def _port(org: NodeOrganization) -> int:
    return int(org.url.split(":")[2].split("/")[0])


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk


def _read_one_answer(sock: socket.socket) -> bytes:
    """One HTTP answer (head and Content-Length body), on a connection the server may keep open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    length = int(next(line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, data
        body += chunk
    return head + b"\r\n\r\n" + body


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.1)
    try:
        while chunk := sock.recv(65536):
            if b"408" not in chunk and b"Request Timeout" not in chunk:
                return False
        return True
    except ConnectionResetError:
        return True
    except (TimeoutError, BlockingIOError):
        return False


def test_slow_and_idle_connections_do_not_lock_clients_out(org):
    port = _port(org)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]  # 2.5 x max_connections
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
    try:
        for sock in slow:
            sock.sendall(b"GET /org-1/info/ HTTP/1.1\r\nHost: x\r\n")  # ...and the head never ends
        started = time.monotonic()
        answer = requests.get(f"{org.url}/info/", headers=_headers(org), timeout=5)  # a legitimate client
        assert answer.status_code == 200 and answer.json()["organization_id"] == org.organization_id
        assert time.monotonic() - started < LIMITS.header_timeout  # served at once, not after the purge
        time.sleep(LIMITS.header_timeout + 1.0)
        for sock in slow:  # trickle one more byte: the deadline runs from the head's start, not its last byte
            try:
                sock.sendall(b"X")
            except OSError:
                pass
        assert all(_closed_by_server(sock) for sock in idle + slow)
    finally:
        for sock in idle + slow:
            sock.close()


def test_a_slowly_trickled_request_head_gets_408(org):
    with socket.create_connection(("127.0.0.1", _port(org)), timeout=10) as sock:
        started = time.monotonic()
        for char in b"GET /org-1/info/ HTTP/1.1\r\nHost: x\r\n":
            try:
                sock.sendall(bytes([char]))
            except OSError:
                break
            time.sleep(0.1)
            if time.monotonic() - started > LIMITS.header_timeout + 2:
                break
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"header_timeout" in answer


def test_a_body_that_stops_arriving_gets_408(org):
    with socket.create_connection(("127.0.0.1", _port(org)), timeout=10) as sock:
        head = (
            f"POST /{org.name}/compute_plan/ HTTP/1.1\r\nHost: x\r\nAuthorization: Token {org.token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        sock.sendall(head.encode())
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"body_idle_timeout=1s" in answer


def test_the_limits_are_cli_flags():
    import subprocess
    import sys

    command = [sys.executable, "-m", "substra_flows.cli", "local-node", "--organizations", "1", "--port", "0"]
    node = subprocess.Popen(
        [*command, "--max-json-bytes", "2000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert node.stdout is not None
        lines = [node.stdout.readline() for _ in range(3)]
        url = lines[2].split("url=")[1].split()[0]
        token = lines[2].split("token=")[1].split()[0]
        answer = requests.post(
            f"{url}/compute_plan/",
            json={"key": str(uuid.uuid4()), "name": "x" * 3000},
            headers={"Authorization": f"Token {token}", "Accept": ACCEPT},
            timeout=10,
        )
        assert answer.status_code == 413 and "at most 2000 (max_json_bytes)" in answer.json()["detail"]
    finally:
        node.terminate()
        node.wait(timeout=30)
