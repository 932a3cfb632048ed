"""Cassettes: login, logout, re-login on 401, organization info and list."""

from __future__ import annotations

import pytest
import requests

from substra_flows import SubstraClient
from substra_flows import exceptions as exc
from substra_flows.transport import USER_AGENT
from tests.cassette import RequestLog
from tests.recording import Target

pytestmark = [pytest.mark.vcr, pytest.mark.cassette]

BAD_TOKEN = "not-a-token-of-this-node"


def test_login_then_logout_deletes_the_token(org1: Target) -> None:
    client = SubstraClient(url=org1.url)
    token = client.login(org1.username, org1.password)
    assert token and client.transport.token == token
    assert client.organization_info().user  # authenticated as the organization's user
    client.logout()
    assert client.transport.token is None
    assert client.organization_info().user is None  # anonymous now
    with pytest.raises(exc.AuthenticationError) as raised:
        SubstraClient(url=org1.url, token=token).list_compute_plan(page_size=1)
    assert raised.value.status_code == 401
    assert "Invalid token" in str(raised.value)


def test_a_failed_logout_is_logged_not_raised_and_forgets_the_token(
    org1: Target, caplog: pytest.LogCaptureFixture
) -> None:
    client = SubstraClient(url=org1.url)
    token = client.login(org1.username, org1.password)
    token_id = client._login_info["id"]
    # the token is removed behind the client's back, so its own logout is refused
    gone = requests.delete(
        f"{org1.url}/active-api-tokens/",
        params={"id": token_id},
        headers={"Authorization": f"Token {token}", "Accept": "application/json;version=0.0"},
        timeout=30,
    )
    assert gone.status_code == 200
    with caplog.at_level("WARNING", logger="substra_flows"):
        client.logout()  # must not raise: the token is useless either way
    assert client.transport.token is None
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "substra_flows"]
    assert any(m.startswith("logout from") and "failed" in m and "401" in m for m in warnings), warnings


def test_login_with_a_wrong_password_is_refused(org1: Target) -> None:
    client = SubstraClient(url=org1.url)
    with pytest.raises(exc.BadLoginException) as raised:
        client.login(org1.username, "wrong-password-for-cassette")
    assert raised.value.status_code == 400
    assert "Unable to log in with provided credentials" in str(raised.value)
    assert "wrong-password-for-cassette" not in str(raised.value)
    assert client.transport.token is None


def test_username_and_password_log_in_at_once_and_out_on_close(org1: Target) -> None:
    with SubstraClient(url=org1.url, username=org1.username, password=org1.password) as client:
        log = RequestLog(client)
        assert client.transport.token
        assert client.organization_info().organization_id == org1.organization_id
    assert log.count("DELETE", "/active-api-tokens/") == 1
    assert client.transport.token is None


def test_a_401_with_credentials_logs_in_again_once(org1: Target) -> None:
    client = SubstraClient(url=org1.url, token=BAD_TOKEN, username=org1.username, password=org1.password)
    log = RequestLog(client)
    plans = client.list_compute_plan(page_size=1)
    assert isinstance(plans, list)
    assert log.count("POST", "/api-token-auth/") == 1
    assert log.count("GET", "/compute_plan/") == 2  # refused, then repeated with the new token
    client.close()
    assert log.count("DELETE", "/active-api-tokens/") == 1


def test_a_bad_token_without_credentials_is_an_authentication_error(org1: Target) -> None:
    client = SubstraClient(url=org1.url, token=BAD_TOKEN)
    with pytest.raises(exc.AuthenticationError) as raised:
        client.list_dataset()
    error = raised.value
    assert error.status_code == 401 and error.method == "GET" and error.url.endswith("/data_manager/")
    assert "Invalid token" in str(error)
    with pytest.raises(exc.AuthenticationError):
        client.organization_info()  # /info/ is anonymous-friendly, but a bad token is still refused


def test_organization_info(org1: Target, client1: SubstraClient) -> None:
    assert client1.url == org1.url and client1.backend_mode == "remote"
    assert client1.transport.base_url == org1.url
    info = client1.organization_info()
    assert info.organization_id == org1.organization_id
    assert info.organization_name
    assert info.user  # authenticated
    assert info.config.model_export_enabled is not None


def test_the_client_names_itself_in_the_user_agent(org1: Target) -> None:
    # regression: setdefault() never replaced requests' default "python-requests/x"
    assert SubstraClient(url=org1.url).transport.session.headers["User-Agent"] == USER_AGENT
    own = requests.Session()
    own.headers["User-Agent"] = "my-pipeline/2.0"
    assert SubstraClient(url=org1.url, session=own).transport.session.headers["User-Agent"] == "my-pipeline/2.0"


def test_list_organization(org1: Target, org2: Target, client2: SubstraClient) -> None:
    organizations = client2.list_organization()
    by_id = {o.id: o for o in organizations}
    assert {org1.organization_id, org2.organization_id} <= by_id.keys()
    assert by_id[org2.organization_id].is_current and not by_id[org1.organization_id].is_current


def test_list_organization_with_a_bad_token(org1: Target) -> None:
    with pytest.raises(exc.AuthenticationError):
        SubstraClient(url=org1.url, token=BAD_TOKEN).list_organization()
