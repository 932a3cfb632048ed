"""Tokens and passwords never appear in reprs, exception texts or logs."""

from __future__ import annotations

import logging

import pytest

from substra_flows import exceptions as exc
from substra_flows.exceptions import redact, register_secret

from ._fakes import TOKEN

PASSWORD = "s3cret-pass"


def test_redact_patterns():
    assert redact("Authorization: Token 0123456789abcdef0123456789abcdef01234567") == "Authorization: Token ***"
    assert redact('{"token": "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"}') == "{\"token\": '***'}"
    assert redact("username=alice&password=hunter2") == "username=alice&password=***"
    assert redact("Token removed") == "Token removed"  # ordinary words stay


def test_registered_secret_is_scrubbed_everywhere():
    register_secret("my-very-own-secret")
    error = exc.InvalidRequest("server said my-very-own-secret is wrong", detail="my-very-own-secret")
    assert "my-very-own-secret" not in str(error) and "my-very-own-secret" not in repr(error)
    assert error.detail == "***"


def test_client_repr_hides_token_and_password(make_client, server):
    client = make_client(username="alice", password=PASSWORD)
    text = repr(client) + repr(client.transport) + repr(client.settings)
    assert PASSWORD not in text and client.transport.token not in text
    assert "'***'" in repr(client)
    other = make_client()
    assert TOKEN not in repr(other) and "***" in repr(other)


def test_secrets_absent_from_logs_and_errors(make_client, adapter, server, caplog):
    caplog.set_level(logging.DEBUG, logger="substra_flows")
    client = make_client(username="alice", password=PASSWORD)
    token = client.transport.token
    # a hostile/buggy server echoing credentials back in its error text
    adapter.fault("GET", r"/info/", (500, {"detail": f"bad header Token {token}, password {PASSWORD}"}, {}))
    with pytest.raises(exc.InternalServerError) as info:
        client.organization_info()
    adapter.fault("GET", r"/info/", (503, {"detail": f"echo {token}"}, {}), times=10)
    with pytest.raises(exc.GatewayUnavailable) as info2:
        client.organization_info()
    client.close()
    texts = (str(info.value), repr(info.value), str(info2.value), caplog.text, str(info.value.errors))
    for text in texts:
        assert token not in text and PASSWORD not in text, text


def test_bad_login_error_has_no_password(make_client, server):
    with pytest.raises(exc.BadLoginException) as info:
        make_client(username="alice", password="wrong-password-123")
    assert "wrong-password-123" not in str(info.value)
