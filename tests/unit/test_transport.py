"""Transport: error mapping, retry policy, Retry-After, 401 re-login, pagination, body caps."""

from __future__ import annotations

import io
import json
import uuid
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import requests
import urllib3.exceptions

from substra_flows import exceptions as exc
from substra_flows.transport import (
    Safety,
    Transport,
    error_from_response,
    filename_from_disposition,
    is_retryable,
    parse_retry_after,
    safe_join,
    sanitize_filename,
    server_message,
)

from ._fakes import BASE, TOKEN, build_response


def refused() -> requests.exceptions.ConnectionError:
    """What requests raises when nothing listens: the request never left."""
    reason = urllib3.exceptions.NewConnectionError(None, "Connection refused")
    return requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/", reason))


def reset() -> requests.exceptions.ConnectionError:
    """Connection dropped after sending: the server may have processed the request."""
    reason = urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError())
    return requests.exceptions.ConnectionError(reason)


def fake_response(status: int, body: object, headers: dict | None = None) -> requests.Response:
    request = requests.Request("POST", f"{BASE}/compute_plan/").prepare()
    return build_response(request, status, body, headers or {})


# -- error mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, exc.InvalidRequest),
        (401, exc.AuthenticationError),
        (403, exc.AuthorizationError),
        (404, exc.NotFound),
        (408, exc.RequestTimeout),
        (409, exc.AlreadyExists),
        (429, exc.TooManyRequests),
        (500, exc.InternalServerError),
        (502, exc.GatewayUnavailable),
        (503, exc.GatewayUnavailable),
        (504, exc.GatewayUnavailable),
        (413, exc.HTTPError),
        (422, exc.HTTPError),
    ],
)
def test_status_maps_to_exception(status, cls):
    error = error_from_response(fake_response(status, {"detail": "boom"}), "POST", "/compute_plan/", key="k1")
    assert type(error) is cls
    assert isinstance(error, exc.HTTPError) and isinstance(error, exc.SubstraError)
    assert error.status_code == status
    assert error.method == "POST" and error.url == "/compute_plan/"
    assert error.key == "k1"
    assert error.detail == "boom"
    assert "boom" in str(error) and "POST /compute_plan/" in str(error) and str(status) in str(error)


def test_server_message_shapes():
    assert server_message({"detail": "plain"}) == "plain"
    assert server_message({"detail": ["a", "b"]}) == "a; b"
    nested = {"detail": [{"description": ["This field may not be null."]}], "key": "(not computed)"}
    assert server_message(nested) == "description: This field may not be null."
    assert server_message({"status": ["Select a valid choice."]}) == "status: Select a valid choice."
    assert server_message({"non_field_errors": ["Unable to log in."]}) == "Unable to log in."
    html = b"<html><head><title>Server Error (500)</title></head><body>...</body></html>"
    assert server_message(None, html, "text/html") == "(HTML body: Server Error (500))"
    assert server_message(None, b"", "") == ""


def test_drf_field_errors_kept_on_exception():
    error = error_from_response(fake_response(400, {"status": ["Select a valid choice."]}), "GET", "/task/")
    assert error.errors == {"status": ["Select a valid choice."]}
    assert "status: Select a valid choice." in str(error)


def test_key_from_body_but_not_placeholder():
    e1 = error_from_response(fake_response(409, {"detail": "x", "key": "abc"}), "POST", "/p/")
    assert e1.key == "abc"
    e2 = error_from_response(fake_response(400, {"detail": ["x"], "key": "(not computed)"}), "POST", "/p/")
    assert e2.key is None


def test_html_500_body():
    error = error_from_response(fake_response(500, b"<!doctype html><title>oops</title>"), "POST", "/x/")
    assert isinstance(error, exc.InternalServerError)
    assert "HTML body" in str(error)


# -- Retry-After ----------------------------------------------------------------------------------


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = datetime(2024, 5, 1, 10, 0, 0, tzinfo=timezone.utc)
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30)
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past, now=now) == 0


def test_retry_after_honoured(client, adapter, sleeps):
    adapter.fault("GET", r"/task/.*", (429, {"detail": "Request was throttled."}, {"Retry-After": "12"}))
    adapter.fault("GET", r"/task/.*", (503, {"detail": "busy"}, {"Retry-After": "3"}))
    adapter.route("GET", r"/task/", lambda c, m: (200, {"count": 0, "next": None, "results": []}, {}))
    assert client.list_task() == []
    assert len(sleeps) == 2
    assert sleeps[0] >= 12 and sleeps[1] >= 3


def test_retry_after_http_date(client, adapter, sleeps):
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=20), usegmt=True)
    adapter.fault("GET", r"/info/", (429, {"detail": "slow down"}, {"Retry-After": when}))
    adapter.route("GET", r"/info/", lambda c, m: (200, {"organization_id": "O", "organization_name": "o"}, {}))
    client.organization_info()
    assert 15 <= sleeps[0] <= 31


def test_retry_after_beyond_budget_gives_up(make_client, adapter, sleeps):
    client = make_client(retry_timeout=60)
    adapter.fault("GET", r"/info/", (429, {"detail": "Request was throttled."}, {"Retry-After": "3600"}))
    with pytest.raises(exc.TooManyRequests) as info:
        client.organization_info()
    assert sleeps == []
    assert info.value.retry_after == 3600
    assert "Retry-After: 3600s" in str(info.value)


# -- which calls retry -----------------------------------------------------------------------------


def test_is_retryable_table():
    sent = exc.ConnectionError("x", request_sent=True)
    not_sent = exc.ConnectionError("x", request_sent=False)
    tls = exc.ConnectionError("x", request_sent=False, transient=False)
    gateway = exc.GatewayUnavailable("x", status_code=503)
    throttled = exc.TooManyRequests("x", status_code=429)
    timeout = exc.Timeout("x")
    r408 = exc.RequestTimeout("x", status_code=408)
    server = exc.InternalServerError("x", status_code=500)
    for e in (sent, not_sent, gateway, throttled, timeout, r408):
        assert is_retryable(e, Safety.SAFE), e
    for e in (server, tls, exc.NotFound("x"), exc.AlreadyExists("x"), exc.InvalidRequest("x")):
        assert not is_retryable(e, Safety.SAFE), e
    assert is_retryable(not_sent, Safety.CONNECT_ONLY)
    assert is_retryable(throttled, Safety.CONNECT_ONLY)
    for e in (sent, gateway, timeout, r408, server):
        assert not is_retryable(e, Safety.CONNECT_ONLY), e
    for e in (sent, not_sent, gateway, throttled):
        assert not is_retryable(e, Safety.NEVER), e


def test_get_retried_on_gateway_and_connection_errors(client, adapter, sleeps, server):
    key = str(uuid.uuid4())
    server.plans[key] = {**_plan(key)}
    adapter.fault("GET", r"/compute_plan/.*", (502, b"<html>bad gateway</html>", {}))
    adapter.fault("GET", r"/compute_plan/.*", reset())
    adapter.fault("GET", r"/compute_plan/.*", requests.exceptions.ReadTimeout("read timed out"))
    adapter.fault("GET", r"/compute_plan/.*", (504, {"detail": "deadline"}, {}))
    assert client.get_compute_plan(key).key == key
    assert len(sleeps) == 4
    assert sleeps == sorted(sleeps) or max(sleeps) <= 30  # growing backoff, capped


def test_get_gives_up_after_max_attempts(make_client, adapter, sleeps):
    client = make_client(max_attempts=3)
    adapter.fault("GET", r"/info/", (503, {"detail": "unavailable"}, {}), times=5)
    with pytest.raises(exc.GatewayUnavailable, match="unavailable"):
        client.organization_info()
    assert len(adapter.calls) == 3 and len(sleeps) == 2


def test_backoff_grows_with_jitter(make_client, adapter, sleeps):
    client = make_client(max_attempts=5, backoff=1.0, backoff_max=4.0)
    adapter.fault("GET", r"/info/", (503, {"detail": "x"}, {}), times=5)
    with pytest.raises(exc.GatewayUnavailable):
        client.organization_info()
    # ceilings 1, 2, 4, 4 with "equal jitter": each sleep in [ceiling/2, ceiling]
    for slept, ceiling in zip(sleeps, [1, 2, 4, 4], strict=True):
        assert ceiling / 2 <= slept <= ceiling


def test_server_keyed_post_not_retried_on_ambiguous_failure(client, adapter, tmp_path, sleeps):
    spec = _dataset_spec(tmp_path)
    adapter.fault("POST", r"/data_manager/", (503, {"detail": "orchestrator unavailable"}, {}))
    with pytest.raises(exc.AssetMaybeCreatedError) as info:
        client.add_dataset(spec)
    assert len(adapter.paths("POST")) == 1 and sleeps == []
    assert isinstance(info.value.cause, exc.GatewayUnavailable)
    assert "may have been created" in str(info.value)
    assert info.value.status_code == 503


@pytest.mark.parametrize("failure", [requests.exceptions.ReadTimeout("read timed out"), reset()])
def test_server_keyed_post_read_timeout_is_ambiguous(client, adapter, tmp_path, failure):
    adapter.fault("POST", r"/data_manager/", failure)
    with pytest.raises(exc.AssetMaybeCreatedError):
        client.add_dataset(_dataset_spec(tmp_path))
    assert len(adapter.paths("POST")) == 1


def test_server_keyed_post_retried_when_never_sent_and_files_rewound(client, adapter, tmp_path, sleeps):
    adapter.fault("POST", r"/data_manager/", refused(), times=2)
    adapter.fault("POST", r"/data_manager/", (429, {"detail": "throttled"}, {"Retry-After": "1"}))
    adapter.route("POST", r"/data_manager/", lambda c, m: (201, {"key": "k-ds", "description": "x"}, {}))
    assert client.add_dataset(_dataset_spec(tmp_path)) == "k-ds"
    posts = [c for c in adapter.calls if c.method == "POST"]
    assert len(posts) == 4 and len(sleeps) == 3
    # files rewound before each attempt: every body carries the whole opener
    assert all(b"def get_data(): ...\n" in p.body for p in posts)


def test_server_keyed_post_500_not_wrapped(client, adapter, tmp_path):
    adapter.fault("POST", r"/function/", (500, b"", {}))
    with pytest.raises(exc.InternalServerError):
        client.add_function(_function_spec(tmp_path))


def test_client_keyed_posts_retried(client, adapter, server, sleeps):
    adapter.fault("POST", r"/compute_plan/", (502, b"bad gateway", {}))
    adapter.fault("POST", r"/task/bulk_create/", requests.exceptions.ReadTimeout("slow"))
    plan = client.add_compute_plan({"name": "p", "tasks": [_task()]})
    assert plan.task_count == 1
    assert len(sleeps) == 2


def test_tls_error_not_retried(client, adapter, sleeps):
    adapter.fault("GET", r"/info/", requests.exceptions.SSLError("certificate verify failed"))
    with pytest.raises(exc.ConnectionError, match="TLS"):
        client.organization_info()
    assert sleeps == []


def test_login_never_retried(make_client, adapter, server, sleeps):
    adapter.fault("POST", r"/api-token-auth/", (503, {"detail": "x"}, {}))
    with pytest.raises(exc.GatewayUnavailable):
        make_client(username="alice", password="s3cret-pass")
    assert len(adapter.paths("POST")) == 1 and sleeps == []


# -- 401 and re-login ------------------------------------------------------------------------------


def test_401_relogs_in_exactly_once(make_client, adapter, server):
    client = make_client(username="alice", password="s3cret-pass")
    assert server.logins == 1
    adapter.fault("GET", r"/info/", (401, {"detail": "The token is expired"}, {}))
    adapter.route("GET", r"/info/", lambda c, m: (200, {"organization_id": "O", "organization_name": "o"}, {}))
    assert client.organization_info().organization_id == "O"
    assert server.logins == 2
    info_calls = [c for c in adapter.calls if c.path == "/info/"]
    assert info_calls[0].headers["Authorization"] != info_calls[1].headers["Authorization"]
    # a second 401 right after the re-login is final: no login loop
    adapter.fault("GET", r"/info/", (401, {"detail": "Invalid token."}, {}), times=2)
    with pytest.raises(exc.AuthenticationError, match="Invalid token"):
        client.organization_info()
    assert server.logins == 3


def test_401_without_credentials_raises(client, adapter):
    adapter.fault("GET", r"/info/", (401, {"detail": "Invalid token."}, {}))
    with pytest.raises(exc.AuthenticationError, match="Invalid token"):
        client.organization_info()


def test_token_with_credentials_relogs_on_expiry(make_client, adapter, server):
    client = make_client(token=TOKEN, username="alice", password="s3cret-pass")
    assert server.logins == 0  # the token is used first
    adapter.fault("GET", r"/info/", (401, {"detail": "The token is expired"}, {}))
    adapter.route("GET", r"/info/", lambda c, m: (200, {"organization_id": "O", "organization_name": "o"}, {}))
    client.organization_info()
    assert server.logins == 1


# -- headers, timeouts, bodies --------------------------------------------------------------------


def test_headers_and_timeouts(make_client, adapter):
    client = make_client(connect_timeout=3, read_timeout=7)
    adapter.route("GET", r"/info/", lambda c, m: (200, {"organization_id": "O", "organization_name": "o"}, {}))
    client.organization_info()
    call = adapter.calls[-1]
    assert call.headers["Accept"] == "application/json;version=0.0"
    assert call.headers["Authorization"] == f"Token {TOKEN}"
    assert call.timeout == (3, 7)


def test_no_authorization_header_without_token(make_client, adapter):
    client = make_client(token=None)
    adapter.route("GET", r"/info/", lambda c, m: (200, {"organization_id": "O", "organization_name": "o"}, {}))
    client.organization_info()
    assert "Authorization" not in adapter.calls[-1].headers


def test_non_json_body_is_invalid_response(client, adapter):
    adapter.route("GET", r"/info/", lambda c, m: (200, b"<html>login page</html>", {"Content-Type": "text/html"}))
    with pytest.raises(exc.InvalidResponse, match="expected JSON"):
        client.organization_info()


def test_a_json_body_cut_in_transit_is_retried_on_safe_requests_only(client, adapter, sleeps, server, tmp_path):
    key = str(uuid.uuid4())
    server.plans[key] = {**_plan(key)}
    cut = (200, b'{"key": "' + key.encode() + b'", "own', {"Content-Type": "application/json"})
    adapter.fault("GET", r"/compute_plan/.*", cut)
    assert client.get_compute_plan(key).key == key  # a read: sent again
    assert len(sleeps) == 1
    adapter.fault("POST", r"/data_manager/", (201, b'{"key": "d7dc', {"Content-Type": "application/json"}))
    with pytest.raises(exc.AssetMaybeCreatedError, match="unparsable"):  # a server-keyed creation: not resent
        client.add_dataset(_dataset_spec(tmp_path))
    assert len([c for c in adapter.calls if c.method == "POST" and c.path == "/data_manager/"]) == 1


def test_an_html_page_is_not_retried(client, adapter, sleeps):
    adapter.route("GET", r"/info/", lambda c, m: (200, b"<html>the web app</html>", {"Content-Type": "text/html"}))
    with pytest.raises(exc.InvalidResponse) as raised:
        client.organization_info()
    assert not raised.value.garbled and sleeps == [] and len(adapter.calls) == 1


def test_oversized_json_refused(make_client, adapter):
    client = make_client()
    client.transport.max_json_bytes = 2048
    big = {"organization_id": "O", "organization_name": "o", "pad": "x" * 5000}
    adapter.route("GET", r"/info/", lambda c, m: (200, big, {}))
    with pytest.raises(exc.InvalidResponse, match="larger than 2048 bytes"):
        client.organization_info()
    adapter.route("GET", r"/info/", lambda c, m: (200, big, {"Content-Length": "999999999"}))
    with pytest.raises(exc.InvalidResponse, match="larger than"):
        client.organization_info()


def test_post_redirect_is_an_error(client, adapter):
    adapter.route("POST", r"/compute_plan/", lambda c, m: (301, b"", {"Location": "/x/"}))
    with pytest.raises(exc.InvalidResponse, match="redirect"):
        client.add_compute_plan({"name": "p"})


# -- pagination --------------------------------------------------------------------------------------


def test_pagination_follows_next_without_duplicating_params(client, adapter, server):
    plan = client.add_compute_plan({"name": "p", "tasks": [_task() for _ in range(5)]})
    adapter.calls.clear()
    tasks = client.list_task({"compute_plan_key": [plan.key]}, page_size=2)
    assert len(tasks) == 5
    gets = [c for c in adapter.calls if c.path == "/task/"]
    assert len(gets) == 3
    for call in gets:
        assert all(len(values) == 1 for values in call.query.values()), call.url
    assert gets[0].query["page_size"] == ["2"]
    assert gets[2].query["page"] == ["3"]


def test_pagination_loop_detected(client, adapter):
    loop = {"count": 9, "next": f"{BASE}/model/?page=2", "previous": None, "results": []}
    adapter.route("GET", r"/model/", lambda c, m: (200, loop, {}))
    with pytest.raises(exc.InvalidResponse, match="pagination loop"):
        client.list_model()


def test_foreign_origin_urls_are_rebased():
    transport = Transport(BASE, token=TOKEN)
    assert transport.rebase("http://internal:8000/org-1/task/?page=2") == f"{BASE.rsplit('/', 1)[0]}/org-1/task/?page=2"
    assert transport.rebase(f"{BASE}/task/?page=2") == f"{BASE}/task/?page=2"
    assert transport.rebase("/org-1/x/") == "http://substra.test/org-1/x/"


def test_url_segments_are_quoted():
    transport = Transport(BASE)
    assert transport.url("task", "../../admin") == f"{BASE}/task/..%2F..%2Fadmin/"
    assert transport.url("task", "k", "logs") == f"{BASE}/task/k/logs/"


# -- download names ----------------------------------------------------------------------------------


def test_content_disposition_names_are_sanitized():
    assert filename_from_disposition('attachment; filename="tuple_logs_k.txt"') == "tuple_logs_k.txt"
    assert filename_from_disposition('attachment; filename="../../etc/passwd"') == "passwd"
    assert filename_from_disposition("attachment; filename=..") is None
    assert filename_from_disposition("attachment; filename*=UTF-8''..%2F..%2Fevil.sh") == "evil.sh"
    assert filename_from_disposition(None) is None
    assert sanitize_filename("a b/c;d|e") == "c_d_e"
    assert sanitize_filename("...hidden") == "hidden"


def test_safe_join_refuses_escapes(tmp_path):
    assert safe_join(tmp_path, "model_x") == (tmp_path / "model_x").resolve()
    for bad in ("../x", "..", "a/b", "", "a\\b"):
        with pytest.raises(exc.UnsafePathError):
            safe_join(tmp_path, bad)


def test_download_to_folder_uses_sanitized_server_name(tmp_path, adapter):
    transport = Transport(BASE, token=TOKEN)
    transport.session.mount("http://", adapter)
    adapter.route(
        "GET",
        r"/task/k/logs/",
        lambda c, m: (200, b"line\n", {"Content-Disposition": 'attachment; filename="../../x.txt"'}),
    )
    target = transport.download_to_folder(f"{BASE}/task/k/logs/", tmp_path / "out", "default.txt")
    assert target == (tmp_path / "out" / "x.txt").resolve()
    assert target.read_bytes() == b"line\n"
    assert not list((tmp_path / "out").glob(".part-*"))


def test_failed_download_leaves_no_partial_file(tmp_path, adapter):
    transport = Transport(BASE, token=TOKEN, max_attempts=1)
    transport.session.mount("http://", adapter)

    class Broken(io.BytesIO):
        def stream(self, *args, **kwargs):
            yield b"partial"
            raise urllib3.exceptions.ProtocolError("connection broken")

    def handler(call, match):
        return 200, b"", {}

    adapter.route("GET", r"/model/m/file/", handler)
    original = adapter.send

    def send(request, **kwargs):
        response = original(request, **kwargs)
        response.raw = Broken()
        return response

    adapter.send = send
    with pytest.raises(exc.ConnectionError):
        transport.download(f"{BASE}/model/m/file/", tmp_path / "model_m")
    assert list(tmp_path.iterdir()) == []


# -- helpers ---------------------------------------------------------------------------------------


def _plan(key: str) -> dict:
    from ._fakes import plan_body

    return plan_body(key)


def _task() -> dict:
    return {"task_id": str(uuid.uuid4()), "function_key": str(uuid.uuid4()), "worker": "MyOrg1MSP"}


def _dataset_spec(tmp_path) -> dict:
    opener = tmp_path / "opener.py"
    opener.write_text("def get_data(): ...\n")
    return {
        "name": "ds",
        "data_opener": opener,
        "permissions": {"public": True, "authorized_ids": []},
        "logs_permission": {"public": False, "authorized_ids": ["MyOrg1MSP"]},
    }


def _function_spec(tmp_path) -> dict:
    import tarfile

    archive = tmp_path / "fn.tar.gz"
    (tmp_path / "Dockerfile").write_text("FROM python:3.11\n")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "Dockerfile", arcname="Dockerfile")
    desc = tmp_path / "desc.md"
    desc.write_text("# fn\n")
    return {
        "name": "fn",
        "file": archive,
        "description": desc,
        "permissions": {"public": True, "authorized_ids": []},
        "inputs": [{"identifier": "opener", "kind": "ASSET_DATA_MANAGER", "multiple": False, "optional": False}],
        "outputs": [{"identifier": "model", "kind": "ASSET_MODEL", "multiple": False}],
    }


def test_function_multipart_shape(client, adapter, tmp_path):
    adapter.route("POST", r"/function/", lambda c, m: (201, {"key": "k-fn"}, {}))
    assert client.add_function(_function_spec(tmp_path)) == "k-fn"
    body = adapter.calls[-1].body
    assert b'name="file"' in body and b'name="description"' in body and b'name="json"' in body
    start = body.index(b'name="json"')
    payload = body[start:].split(b"\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0]
    doc = json.loads(payload)
    assert doc["inputs"] == {"opener": {"kind": "ASSET_DATA_MANAGER", "optional": False, "multiple": False}}
    assert doc["outputs"] == {"model": {"kind": "ASSET_MODEL", "multiple": False}}
    assert "metadata" not in doc


# -- logging ----------------------------------------------------------------------------------------


def test_one_debug_line_per_request_and_retry_warnings(client, adapter, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="substra_flows")
    adapter.fault("GET", r"/info/", (503, {"detail": "orchestrator unavailable"}, {}))
    adapter.route("GET", r"/info/", lambda c, m: (200, {"organization_id": "O", "organization_name": "o"}, {}))
    client.organization_info()
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG and r.name == "substra_flows"]
    assert len([line for line in debug if line.startswith("GET /org-1/info/ -> ")]) == 2
    assert any(" -> 503 in " in line and line.endswith(" ms") for line in debug)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "503" in warnings[0] and "orchestrator unavailable" in warnings[0] and "retrying in" in warnings[0]
