"""SubstraHook unit tests: connection -> client settings, URLs, async access, test_connection, secrets."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import Connection

from airflow_provider.hooks import substra as hook_module
from airflow_provider.hooks.substra import SubstraHook, api_url, client_kwargs, compute_plan_url
from substra_flows import SubstraClient
from substra_flows.exceptions import AuthenticationError
from tests.airflow.conftest import UNIT_TOKEN, conn_env

KEY = "0b8f0a9c-5d52-4a0c-9a43-6a3f0e1d2c3b"


def make_conn(**fields: Any) -> Connection:
    fields.setdefault("conn_id", "substra_test")
    fields.setdefault("conn_type", "substra")
    if isinstance(fields.get("extra"), dict):
        fields["extra"] = json.dumps(fields["extra"])
    return Connection(**fields)


def test_hook_identity() -> None:
    assert SubstraHook.conn_type == "substra"
    assert SubstraHook.conn_name_attr == "substra_conn_id"
    assert SubstraHook.default_conn_name == "substra_default"
    assert SubstraHook().substra_conn_id == "substra_default"


def test_token_connection_to_client_settings() -> None:
    conn = make_conn(host="https://substra.example.org/org-1/", password="tok-123456")
    assert client_kwargs(conn) == {"url": "https://substra.example.org/org-1", "token": "tok-123456"}


def test_login_and_password_mean_username_password_auth() -> None:
    conn = make_conn(host="https://substra.example.org", login="alice", password="s3cret-pass")
    assert client_kwargs(conn) == {"url": "https://substra.example.org", "username": "alice", "password": "s3cret-pass"}


def test_extras_are_parsed_from_json_values_text_and_prefixed_names() -> None:
    extra = {
        "insecure": "true",
        "connect_timeout": "5",
        "read_timeout": 30,
        "extra__substra__retry_timeout": "60.5",
        "max_attempts": "3",
        "backoff": 0.5,
        "backoff_max": "",
        "total_timeout": "45",
        "max_download_bytes": "1048576",
        "frontend_url": "https://front.example.org/",
    }
    conn = make_conn(host="https://x.example.org", password="tok-123456", extra=extra)
    kwargs = client_kwargs(conn, {"read_timeout": 99.0})
    assert kwargs == {
        "url": "https://x.example.org",
        "token": "tok-123456",
        "insecure": True,
        "connect_timeout": 5.0,
        "read_timeout": 99.0,
        "retry_timeout": 60.5,
        "max_attempts": 3,
        "backoff": 0.5,
        "total_timeout": 45.0,
        "max_download_bytes": 1048576,
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"insecure": "maybe"}, "'insecure' must be a boolean"),
        ({"read_timeout": "soon"}, "'read_timeout' must be a number"),
    ],
)
def test_bad_extras_are_named(extra: dict[str, Any], message: str) -> None:
    conn = make_conn(host="https://x.example.org", password="tok-123456", extra=extra)
    with pytest.raises(ValueError, match=message):
        client_kwargs(conn)


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        ({"host": "substra.example.org"}, "https://substra.example.org"),
        ({"host": "127.0.0.1", "port": 8000, "schema": "org-1"}, "https://127.0.0.1:8000/org-1"),
        ({"host": "127.0.0.1", "port": 8000, "schema": "http"}, "http://127.0.0.1:8000"),
        ({"host": "http://127.0.0.1:8000/org-2/"}, "http://127.0.0.1:8000/org-2"),
    ],
)
def test_api_url_from_a_full_url_or_uri_parts(fields: dict[str, Any], url: str) -> None:
    assert api_url(make_conn(**fields)) == url


def test_missing_host_or_password_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="has no host"):
        client_kwargs(make_conn(password="tok-123456"))
    with pytest.raises(ValueError, match="has no password"):
        client_kwargs(make_conn(host="https://x.example.org", login="alice"))


def test_compute_plan_url_prefers_the_frontend() -> None:
    front = make_conn(host="https://api.example.org", password="t", extra={"frontend_url": "https://app.example.org/"})
    assert compute_plan_url(front, KEY) == f"https://app.example.org/compute_plans/{KEY}/tasks"
    api_only = make_conn(host="https://api.example.org/org-1", password="t")
    assert compute_plan_url(api_only, KEY) == f"https://api.example.org/org-1/compute_plan/{KEY}/"


def test_get_conn_builds_one_client_from_the_airflow_connection(unit_conn: dict[str, Any]) -> None:
    hook = SubstraHook()
    client = hook.get_conn()
    assert isinstance(client, SubstraClient)
    assert client is hook.get_conn()
    assert client.url == "http://substra.invalid/org-1"
    assert UNIT_TOKEN not in repr(client)
    assert hook.compute_plan_url(KEY) == f"https://substra-frontend.invalid/compute_plans/{KEY}/tasks"
    hook.close()


def test_a_bad_connection_error_names_the_connection_not_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "very-secret-token-9f8e7d"
    monkeypatch.setenv(*conn_env("substra_bad", {"conn_type": "substra", "host": "ftp://nowhere", "password": secret}))
    with pytest.raises(Exception) as caught:
        SubstraHook("substra_bad").get_conn()
    assert "substra_bad" in str(caught.value)
    assert secret not in str(caught.value)


async def test_aget_conn_does_not_block_and_shares_one_client_per_connection(unit_conn: dict[str, Any]) -> None:
    first = await SubstraHook().aget_conn(shared=True)
    second = await SubstraHook().aget_conn(shared=True)
    own = await SubstraHook().aget_conn()
    assert first is second
    assert own is not first
    assert isinstance(first, SubstraClient)


async def test_concurrent_aget_conn_create_a_single_shared_client(unit_conn: dict[str, Any]) -> None:
    clients = await asyncio.gather(*(SubstraHook().aget_conn(shared=True) for _ in range(20)))
    assert len({id(c) for c in clients}) == 1


async def test_a_changed_connection_gets_a_new_shared_client(
    unit_conn: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await SubstraHook().aget_conn(shared=True)
    monkeypatch.setenv(*conn_env("substra_default", {**unit_conn, "password": "rotated-token-123456"}))
    after = await SubstraHook().aget_conn(shared=True)
    assert after is not before


class FakeClient:
    """Records its settings; answers /info/ or fails like a 401."""

    instances: list[FakeClient] = []
    fail: Exception | None = None

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.closed = False
        self.transport = SimpleNamespace(token=kwargs.get("token") or "token-from-login-7c6b5a")
        FakeClient.instances.append(self)

    def organization_info(self) -> Any:
        if FakeClient.fail:
            raise FakeClient.fail
        return SimpleNamespace(organization_id="MyOrg1MSP", version="1.0.0")

    def close(self) -> None:
        self.closed = True


@pytest.fixture()
def fake_client(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    FakeClient.instances, FakeClient.fail = [], None
    monkeypatch.setattr(hook_module, "SubstraClient", FakeClient)
    return FakeClient


def test_test_connection_reports_the_organization(unit_conn: dict[str, Any], fake_client: type[FakeClient]) -> None:
    assert SubstraHook().test_connection() == (True, "Connected to Substra organization MyOrg1MSP, version 1.0.0")
    assert fake_client.instances[0].closed


def test_test_connection_failure_is_a_message_without_the_token(
    unit_conn: dict[str, Any], fake_client: type[FakeClient]
) -> None:
    fake_client.fail = AuthenticationError(f"401 Invalid token: Token {UNIT_TOKEN}", status_code=401)
    ok, message = SubstraHook().test_connection()
    assert not ok
    assert message.startswith("AuthenticationError: 401 Invalid token")
    assert UNIT_TOKEN not in message


def test_username_password_connection_logs_in_through_the_client(
    monkeypatch: pytest.MonkeyPatch, fake_client: type[FakeClient]
) -> None:
    monkeypatch.setenv(
        *conn_env(
            "substra_login",
            {"conn_type": "substra", "host": "https://x.example.org", "login": "org-1", "password": "pw-123456"},
        )
    )
    client = SubstraHook("substra_login").get_conn()
    assert client.kwargs == {"url": "https://x.example.org", "username": "org-1", "password": "pw-123456"}
    from substra_flows.exceptions import redact

    assert "token-from-login-7c6b5a" not in redact("got token-from-login-7c6b5a")  # the login's token is masked


def test_ui_field_behaviour_for_airflow_3_1_matches_the_provider_info() -> None:
    behaviour = SubstraHook.get_ui_field_behaviour()
    assert set(behaviour["hidden_fields"]) == {"schema", "port", "extra"}
    assert behaviour["relabeling"]["password"] == "API token or password"
    assert "frontend_url" in behaviour["placeholders"]
