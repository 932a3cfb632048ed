"""A hostile or broken server cannot make the client write outside its folder, exhaust memory, or leak the token.

Every answer comes from the in-process fake (tests/unit/_fakes.py), so each hostile answer is exact:
escaping download names, non-UUID keys in server objects, oversized and absurd bodies, next links and
redirects to other hosts.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from substra_flows import SubstraClient
from substra_flows import exceptions as exc
from substra_flows.transport import Transport

from ._fakes import BASE, TOKEN, FakeAdapter, function_body, plan_body, task_body

EVIL = "http://evil.test"
PUBLIC = {"public": True, "authorized_ids": []}


def k() -> str:
    return str(uuid.uuid4())


def tree(root: Path) -> set[str]:
    """Every file and folder under ``root`` (relative paths), to prove nothing else was written."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A folder with a sibling ``outside`` folder and a ``victim`` file an escape would overwrite."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "victim.txt").write_text("original")
    (tmp_path / "dest").mkdir()
    return tmp_path


HOSTILE_NAMES = [
    'attachment; filename="../victim.txt"',
    'attachment; filename="../../../../../../tmp/evil.sh"',
    'attachment; filename="/etc/passwd"',
    'attachment; filename="C:\\\\Windows\\\\evil.dll"',
    'attachment; filename="..\\\\victim.txt"',
    "attachment; filename*=UTF-8''..%2F..%2Fvictim.txt",
    "attachment; filename*=UTF-8''%2Fetc%2Fshadow",
    'attachment; filename="evil%00.txt"',
    "attachment; filename*=UTF-8''evil%00..%2F.txt",
    'attachment; filename=".."',
    'attachment; filename="."',
    'attachment; filename=""',
    'attachment; filename="' + "a" * 5000 + '"',
    'attachment; filename="~/.bashrc"',
    'attachment; filename=".ssh/authorized_keys"',
]


# -- downloads ---------------------------------------------------------------------------------------


def _dataset(key: str, opener_address: str) -> dict[str, Any]:
    return {
        "key": key,
        "name": "d",
        "owner": "MyOrg1MSP",
        "permissions": {"process": PUBLIC, "download": PUBLIC},
        "opener": {"checksum": "c", "storage_address": opener_address},
        "description": {"checksum": "c", "storage_address": f"{BASE}/data_manager/{key}/description/"},
        "metadata": {},
    }


@pytest.mark.parametrize("disposition", HOSTILE_NAMES)
def test_client_downloads_ignore_hostile_content_disposition(client, adapter, sandbox, disposition):
    """Client downloads use their own file names; whatever the header says, files land in the folder."""
    dataset_key, function_key, model_key, task_key = k(), k(), k(), k()
    header = {"Content-Disposition": disposition}
    fn = function_body(function_key)
    adapter.route("GET", rf"/data_manager/{dataset_key}/", lambda c, m: (200, _dataset(dataset_key, f"{BASE}/o/"), {}))
    adapter.route("GET", r"/o/", lambda c, m: (200, b"opener", header))
    adapter.route("GET", rf"/function/{function_key}/", lambda c, m: (200, fn, {}))
    adapter.route("GET", rf"/function/{function_key}/file/", lambda c, m: (200, b"archive", header))
    adapter.route("GET", rf"/model/{model_key}/file/", lambda c, m: (200, b"weights", header))
    adapter.route("GET", rf"/task/{task_key}/logs/", lambda c, m: (200, b"log line\n", header))
    dest = sandbox / "dest"
    before = tree(sandbox)

    written = [
        client.download_dataset(dataset_key, dest),
        client.download_function(function_key, dest),
        client.download_model(model_key, dest),
        Path(client.download_logs(task_key, dest)),
    ]

    assert [p.name for p in written] == [
        "opener.py",
        "function.tar.gz",
        f"model_{model_key}",
        f"task_logs_{task_key}.txt",
    ]
    assert all(p.parent == dest.resolve() for p in written)
    assert tree(sandbox) - before == {f"dest/{p.name}" for p in written}
    assert (sandbox / "victim.txt").read_text() == "original"


@pytest.mark.parametrize("disposition", HOSTILE_NAMES)
def test_server_named_download_is_sanitized_or_refused(adapter, sandbox, disposition):
    """``download_to_folder`` honours the server's name only as a plain base name inside the folder."""
    transport = Transport(BASE, token=TOKEN, max_attempts=1)
    transport.session.mount("http://", adapter)
    adapter.route("GET", r"/x/", lambda c, m: (200, b"payload", {"Content-Disposition": disposition}))
    dest = sandbox / "dest"
    before = tree(sandbox)
    try:
        target = transport.download_to_folder(f"{BASE}/x/", dest, "default.bin")
    except exc.UnsafePathError:
        assert tree(sandbox) == before  # refused: nothing written, not even a temp file
        return
    assert target.parent == dest.resolve()
    assert "\x00" not in target.name and "/" not in target.name and "\\" not in target.name
    assert not target.name.startswith(".") and len(target.name) <= 200
    assert target.read_bytes() == b"payload"
    assert tree(sandbox) - before == {f"dest/{target.name}"}
    assert (sandbox / "victim.txt").read_text() == "original"


def test_download_refuses_a_planted_symlink_instead_of_writing_through_it(client, adapter, sandbox):
    """A symlink at the target name, planted to redirect the write outside, makes the download refuse."""
    model_key = k()
    dest = sandbox / "dest"
    os.symlink(sandbox / "victim.txt", dest / f"model_{model_key}")
    adapter.route("GET", rf"/model/{model_key}/file/", lambda c, m: (200, b"weights", {}))
    with pytest.raises(exc.UnsafePathError, match="escape"):
        client.download_model(model_key, dest)
    assert (sandbox / "victim.txt").read_text() == "original"
    assert tree(dest) == {f"model_{model_key}"}  # the link, and no temp file left behind


@pytest.mark.parametrize(
    "hostile_key",
    ["../../victim.txt", "/etc/passwd", "..", "model\x00.bin", "a/../../b", "7f1b8e52-2d4c-4a57-9a0e-3c6d5b1f2e90/.."],
)
def test_non_uuid_model_key_from_the_server_is_refused(client, adapter, sandbox, hostile_key):
    """The model key comes from the server's output_assets answer; a path-like key never becomes a file name."""
    task_key = k()
    model = {
        "key": hostile_key,
        "compute_task_key": task_key,
        "address": {"checksum": "c", "storage_address": f"{BASE}/model/x/file/"},
        "permissions": {"process": PUBLIC, "download": PUBLIC},
        "owner": "MyOrg1MSP",
        "creation_date": "2024-05-01T10:00:00Z",
    }
    page = {
        "count": 1,
        "next": None,
        "previous": None,
        "results": [{"identifier": "model", "kind": "ASSET_MODEL", "asset": model}],
    }
    adapter.route("GET", rf"/task/{task_key}/output_assets/", lambda c, m: (200, page, {}))
    before = tree(sandbox)
    with pytest.raises(exc.KeyFormatError) as raised:
        client.download_model_from_task(task_key, "model", sandbox / "dest")
    assert repr(hostile_key)[:30] in str(raised.value)
    assert tree(sandbox) == before
    assert not any("/file/" in c.path for c in adapter.calls)


@pytest.mark.parametrize("hostile_key", ["../../victim.txt", "/etc/passwd", "%2e%2e%2fvictim", "k\x00"])
def test_path_like_keys_given_by_the_caller_never_reach_a_url_or_a_file(client, adapter, sandbox, hostile_key):
    for call in (
        lambda: client.download_model(hostile_key, sandbox / "dest"),
        lambda: client.download_logs(hostile_key, sandbox / "dest"),
        lambda: client.get_task(hostile_key),
    ):
        with pytest.raises(exc.KeyFormatError):
            call()
    assert adapter.calls == []
    assert tree(sandbox / "dest") == set()


def test_storage_address_on_another_host_is_fetched_from_our_origin(client, adapter, sandbox):
    key = k()
    address = f"{EVIL}/../../org-1/data_manager/{key}/opener/"
    adapter.route("GET", rf"/data_manager/{key}/", lambda c, m: (200, _dataset(key, address), {}))
    adapter.route("GET", rf"/data_manager/{key}/opener/", lambda c, m: (200, b"code", {}))
    path = client.download_dataset(key, sandbox / "dest")
    assert path.read_bytes() == b"code"
    assert [c.url.split("/")[2] for c in adapter.calls] == ["substra.test", "substra.test"]
    assert all(c.headers.get("Authorization") == f"Token {TOKEN}" for c in adapter.calls)


# -- oversized and absurd bodies ---------------------------------------------------------------------


def test_json_cap_is_a_client_option(make_client, adapter):
    plan_key = k()
    padded = plan_body(plan_key, name="p", metadata={"pad": "x" * 20_000})
    adapter.route("GET", rf"/compute_plan/{plan_key}/", lambda c, m: (200, padded, {}))
    assert make_client().get_compute_plan(plan_key).key == plan_key  # default cap: 256 MiB

    small = make_client(max_json_bytes=4096)
    assert small.transport.max_json_bytes == 4096
    with pytest.raises(exc.InvalidResponse) as raised:
        small.get_compute_plan(plan_key)
    assert f"GET /org-1/compute_plan/{plan_key}/" in str(raised.value)
    assert "larger than 4096 bytes" in str(raised.value)
    assert raised.value.url == f"/org-1/compute_plan/{plan_key}/"


def test_json_cap_from_the_environment(make_client, adapter, monkeypatch):
    monkeypatch.setenv("SUBSTRA_HOSTILE_MAX_JSON_BYTES", "2048")
    client = make_client(client_name="hostile")
    assert client.transport.max_json_bytes == 2048
    adapter.route("GET", r"/organization/", lambda c, m: (200, [{"id": "x" * 4000, "is_current": True}], {}))
    with pytest.raises(exc.InvalidResponse, match="GET /org-1/organization/: response body larger than 2048"):
        client.list_organization()


def test_declared_oversized_length_is_refused_before_reading(make_client, adapter):
    client = make_client(max_json_bytes=4096)

    class Exploding:
        """A body that must never be read: the Content-Length alone condemns it."""

        def read(self, *args: Any, **kwargs: Any) -> bytes:
            raise AssertionError("the body was read")

        def stream(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the body was read")

        def close(self) -> None:
            pass

    def huge(call, match):
        return 200, b"", {"Content-Length": str(50 * 1024**3), "Content-Type": "application/json"}

    adapter.route("GET", r"/info/", huge)
    original_send = adapter.send

    def send(request, **kwargs):
        response = original_send(request, **kwargs)
        response.raw = Exploding()
        return response

    adapter.send = send  # type: ignore[method-assign]
    with pytest.raises(exc.InvalidResponse, match="larger than 4096 bytes"):
        client.organization_info()


def test_text_bodies_share_the_cap(make_client, adapter):
    task_key = k()
    adapter.route("GET", rf"/task/{task_key}/logs/", lambda c, m: (200, b"x" * 10_000, {}))
    with pytest.raises(exc.InvalidResponse, match=f"/task/{task_key}/logs/: response body larger than 4096"):
        make_client(max_json_bytes=4096).get_logs(task_key)


def test_log_tail_of_an_endless_line_is_bounded(client, adapter):
    """Failure messages include a log tail; a 20 MB line without newline keeps only its last 64 KiB."""
    task_key = k()
    body = b"start\n" + b"A" * (20 * 1024 * 1024) + b"THE END"
    adapter.route("GET", rf"/task/{task_key}/logs/", lambda c, m: (200, body, {}))
    tail = client.log_tail(task_key)
    assert tail is not None
    first, last = tail.split("\n")
    assert first == "start"
    assert last == "A" * (64 * 1024 - len("THE END")) + "THE END"


def test_log_tail_keeps_the_last_lines(client, adapter):
    task_key = k()
    body = "".join(f"line {i}\r\n" for i in range(1000)).encode() + "last é".encode()
    adapter.route("GET", rf"/task/{task_key}/logs/", lambda c, m: (200, body, {}))
    assert client.log_tail(task_key, max_lines=3) == "line 998\nline 999\nlast é"


def test_huge_error_body_gives_a_short_message(client, adapter):
    plan_key = k()
    page = b"<html><head><title>Internal crash</title></head><body>" + b"<p>trace</p>" * 1_000_000 + b"</body></html>"
    adapter.route("GET", rf"/compute_plan/{plan_key}/", lambda c, m: (500, page, {"Content-Type": "text/html"}))
    with pytest.raises(exc.InternalServerError) as raised:
        client.get_compute_plan(plan_key)
    text = str(raised.value)
    assert f"GET /org-1/compute_plan/{plan_key}/ -> 500" in text
    assert "Internal crash" in text
    assert len(text) < 600


NOT_JSON: dict[str, tuple[bytes, str]] = {
    "html login page": (b"<html><body>Please log in</body></html>", "text/html"),
    "binary garbage": (bytes(range(256)) * 4, "application/octet-stream"),
    "truncated json": (b'{"key": "abc", "name": ', "application/json"),
    "json with NUL": (b'{"key": "a"}\x00{"evil": 1}', "application/json"),
    "absurdly nested json": (b"[" * 200_000 + b"]" * 200_000, "application/json"),
    "invalid utf-8": (b'{"name": "\xff\xfe"}', "application/json"),
}


@pytest.mark.parametrize("case", sorted(NOT_JSON))
def test_non_json_bodies_are_invalid_responses_naming_the_route(client, adapter, case):
    plan_key = k()
    body, ctype = NOT_JSON[case]
    adapter.route("GET", rf"/compute_plan/{plan_key}/", lambda c, m: (200, body, {"Content-Type": ctype}))
    with pytest.raises(exc.InvalidResponse) as raised:
        client.get_compute_plan(plan_key)
    text = str(raised.value)
    assert f"GET /org-1/compute_plan/{plan_key}/" in text
    assert "expected JSON" in text and ctype in text
    assert len(text) < 600


@pytest.mark.parametrize("case", sorted(NOT_JSON))
def test_non_json_error_bodies_keep_the_status(client, adapter, case):
    plan_key = k()
    body, ctype = NOT_JSON[case]
    adapter.route("GET", rf"/compute_plan/{plan_key}/", lambda c, m: (404, body, {"Content-Type": ctype}))
    with pytest.raises(exc.NotFound) as raised:
        client.get_compute_plan(plan_key)
    assert raised.value.status_code == 404
    assert f"GET /org-1/compute_plan/{plan_key}/ -> 404" in str(raised.value)


WRONG_SHAPES: dict[str, Any] = {
    "empty body": b"",
    "a list": [plan_body(str(uuid.uuid4()))],
    "a JSON string": b'"PLAN_STATUS_DONE"',
    "JSON null": b"null",
    "a number": 42,
    "missing fields": {"key": "x"},
    "key of the wrong type": {**plan_body(str(uuid.uuid4())), "key": ["a", "b"]},
}


@pytest.mark.parametrize("case", sorted(WRONG_SHAPES))
def test_json_of_the_wrong_shape_is_an_invalid_response(client, adapter, case):
    plan_key = k()
    body = WRONG_SHAPES[case]
    headers = {"Content-Type": "application/json"} if isinstance(body, bytes) else {}
    adapter.route("GET", rf"/compute_plan/{plan_key}/", lambda c, m: (200, body, headers))
    with pytest.raises(exc.InvalidResponse, match=f"GET /compute_plan/{plan_key}/: unexpected ComputePlan shape"):
        client.get_compute_plan(plan_key)


@pytest.mark.parametrize("page", [{"results": "x"}, {"count": 1}, b'"page"', 7, {"results": None, "next": "x"}])
def test_list_pages_of_the_wrong_shape_name_the_route(client, adapter, page):
    adapter.route("GET", r"/task/", lambda c, m: (200, page, {"Content-Type": "application/json"}))
    with pytest.raises(exc.InvalidResponse, match="GET /org-1/task/: expected a page with 'results'"):
        client.list_task()


# -- links and redirects to other hosts ----------------------------------------------------------------


def _two_pages(first_next: str) -> Callable[..., Any]:
    """Page 1 points at ``first_next``; page 2 (wherever it is asked) ends the list."""
    plan = k()

    def handler(call, match):
        if call.query.get("page") == ["2"]:
            return 200, {"count": 2, "next": None, "previous": None, "results": [task_body(k(), plan)]}, {}
        return 200, {"count": 2, "next": first_next, "previous": None, "results": [task_body(k(), plan)]}, {}

    return handler


@pytest.mark.parametrize(
    "next_link",
    [
        f"{EVIL}/org-1/task/?page=2",
        "http://substra.test:8443/org-1/task/?page=2",
        "https://substra.test/org-1/task/?page=2",
        "http://user:pass@evil.test/org-1/task/?page=2",
        "//evil.test/org-1/task/?page=2",
    ],
)
def test_next_links_to_another_origin_are_rebased_onto_ours(client, adapter, caplog, next_link):
    adapter.route("GET", r"/task/", _two_pages(next_link))
    with caplog.at_level(logging.WARNING, logger="substra_flows"):
        tasks = client.list_task()
    assert len(tasks) == 2
    assert [c.url.split("?")[0] for c in adapter.calls] == [f"{BASE}/task/", f"{BASE}/task/"]
    assert adapter.calls[1].query["page"] == ["2"]
    assert all(c.headers["Authorization"] == f"Token {TOKEN}" for c in adapter.calls)
    assert "another origin" in caplog.text
    assert TOKEN not in caplog.text


def test_https_client_is_not_downgraded_by_an_http_next_link(make_client, adapter):
    client = make_client(url="https://substra.test/org-1")
    adapter.route("GET", r"/task/", _two_pages("http://substra.test/org-1/task/?page=2"))
    assert len(client.list_task()) == 2
    assert all(c.url.startswith("https://substra.test/org-1/task/") for c in adapter.calls)


def test_redirect_to_another_host_does_not_carry_the_token(client, adapter):
    plan_key = k()
    adapter.route(
        "GET", rf"/compute_plan/{plan_key}/", lambda c, m: (302, b"", {"Location": f"{EVIL}/steal/{plan_key}/"})
    )
    evil_calls: list[dict[str, str]] = []
    original_send = adapter.send

    def send(request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if request.url.startswith(EVIL):
            evil_calls.append(dict(request.headers))
        return original_send(request, **kwargs)

    adapter.send = send  # type: ignore[method-assign]
    with pytest.raises(exc.SubstraError):
        client.get_compute_plan(plan_key)
    assert all("Authorization" not in headers for headers in evil_calls)
    assert all(TOKEN not in str(headers) for headers in evil_calls)


def test_post_redirect_is_never_followed(client, adapter):
    adapter.route("POST", r"/compute_plan/", lambda c, m: (307, b"", {"Location": f"{EVIL}/compute_plan/"}))
    with pytest.raises(exc.InvalidResponse, match="unexpected redirect 307"):
        client.add_compute_plan({"name": "p"})
    assert [c.url.split("/")[2] for c in adapter.calls] == ["substra.test"]


def test_foreign_storage_address_of_a_description_is_rebased(client, adapter):
    key = k()
    fn = function_body(key)
    fn["description"]["storage_address"] = f"{EVIL}/org-1/function/{key}/description/"
    adapter.route("GET", rf"/function/{key}/", lambda c, m: (200, fn, {}))
    adapter.route("GET", rf"/function/{key}/description/", lambda c, m: (200, "# fn", {}))
    assert client.describe_function(key) == "# fn"
    assert all(c.url.startswith("http://substra.test/") for c in adapter.calls)


def test_real_adapter_never_contacts_the_foreign_host(adapter):
    """Belt and braces: with the fake mounted only for our host, a foreign next link would fail loudly."""
    session = requests.Session()
    session.mount("http://substra.test", adapter)

    class Refuse(FakeAdapter):
        def send(self, request, **kwargs):  # pragma: no cover - reaching it is the failure
            raise AssertionError(f"contacted {request.url}")

    session.mount("http://evil.test", Refuse())
    client = SubstraClient(url=BASE, token=TOKEN, session=session)
    adapter.route("GET", r"/task/", _two_pages(f"{EVIL}/org-1/task/?page=2"))
    assert len(client.list_task()) == 2


# -- secrets in broken answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [10, 25, 39])
def test_truncated_login_answer_does_not_leak_part_of_the_token(make_client, adapter, caplog, cut):
    """A login body cut inside the token value: the error quotes the body, but not the token's first characters."""
    token = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    body = (
        '{"id": "3f0c2a4e-1111-2222-3333-444455556666", "expires_at": "2024-05-02T10:00:00Z", '
        f'"created_at": "2024-05-01T10:00:00Z", "token": "{token[:cut]}'
    )
    adapter.route("POST", r"/api-token-auth/", lambda c, m: (200, body.encode(), {"Content-Type": "application/json"}))
    with caplog.at_level(logging.DEBUG), pytest.raises(exc.ConfigurationError) as raised:
        make_client(username="alice", password="correct horse battery")
    text = f"{raised.value} {raised.value!r} {caplog.text}"
    assert "expected JSON" in text and "/api-token-auth/" in text
    assert token[:cut] not in text
    assert "correct horse battery" not in text
