"""Cassettes of the 0.x profiles: add_profile + login, set_profile, set_user, from_config_file.

The config and user files live in each test's tmp_path. While recording, logins use the node's
real credentials; on replay the login bodies and tokens are the scrubbed ``REDACTED``.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from substra_flows import exceptions as exc
from substra_flows.legacy import Client
from substra_flows.legacy.exceptions import ProfileNotFoundError
from tests.recording import REDACTED, Target, recording

pytestmark = [pytest.mark.vcr, pytest.mark.cassette]


def files(tmp_path: Path) -> dict[str, str]:
    return {"config_path": str(tmp_path / "substra.json"), "user_path": str(tmp_path / "substra-user.json")}


def test_add_profile_then_login_saves_the_token_but_never_the_password(tmp_path: Path, org1: Target):
    client = Client(**files(tmp_path))
    client.add_profile("org-1", org1.username, org1.password, org1.url)
    token = client.login()
    assert token == (REDACTED if not recording() else token) and token
    assert [n["is_current"] for n in client.list_node()] == [True, False]
    saved = json.loads((tmp_path / "substra-user.json").read_text())
    assert saved == {"org-1": {"token": token}}
    assert stat.S_IMODE((tmp_path / "substra-user.json").stat().st_mode) == 0o600
    config = json.loads((tmp_path / "substra.json").read_text())
    assert config == {"org-1": {"url": org1.url, "version": "0.0", "insecure": False, "username": org1.username}}
    if recording():  # on replay the username and the password are both "REDACTED"
        assert org1.password not in (tmp_path / "substra.json").read_text()
    client.close()


def test_login_with_a_wrong_password_is_refused(tmp_path: Path, org1: Target):
    client = Client(**files(tmp_path))
    client.add_profile("org-1", org1.username, "not-the-password", org1.url)
    with pytest.raises(exc.BadLoginException):
        client.login()
    assert not (tmp_path / "substra-user.json").exists()
    client.close()


def test_a_new_client_loads_the_profile_and_its_saved_token(tmp_path: Path, org1: Target, org2: Target):
    first = Client(**files(tmp_path))
    first.add_profile("org-2", org2.username, org2.password, org2.url)
    first.login()
    first.close()  # the saved token stays valid: a later run uses it
    later = Client(profile_name="org-2", **files(tmp_path))
    assert [n["is_current"] for n in later.list_node()] == [False, True]
    from_file = Client.from_config_file("org-2", files(tmp_path)["config_path"], files(tmp_path)["user_path"])
    assert [n["id"] for n in from_file.list_node() if n["is_current"]] == [org2.organization_id]
    later.close()
    from_file.close()


def test_set_profile_switches_organization_and_set_user_reloads_the_token(tmp_path: Path, org1: Target, org2: Target):
    client = Client(**files(tmp_path))
    client.add_profile("org-1", org1.username, org1.password, org1.url)
    client.login()
    client.add_profile("org-2", org2.username, org2.password, org2.url)
    client.login()
    assert client.set_profile("org-1")["url"] == org1.url
    assert [n["id"] for n in client.list_node() if n["is_current"]] == [org1.organization_id]
    client.set_profile("org-2")
    client.set_user()
    assert [n["id"] for n in client.list_node() if n["is_current"]] == [org2.organization_id]
    client.close()


def test_a_stale_token_in_the_user_file_is_an_authentication_error(tmp_path: Path, org1: Target):
    Path(files(tmp_path)["config_path"]).write_text(json.dumps({"org-1": {"url": org1.url}}))
    Path(files(tmp_path)["user_path"]).write_text(json.dumps({"org-1": {"token": "0" * 40}}))
    client = Client(profile_name="org-1", **files(tmp_path))
    with pytest.raises(exc.AuthenticationError):
        client.list_node()
    with pytest.raises(ProfileNotFoundError):
        client.set_profile("org-3")
    client.close()


def test_the_later_0x_signature_logs_in_without_files_and_out_on_close(tmp_path: Path, org1: Target, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # nothing may be written under ~ either
    client = Client(url=org1.url)
    token = client.login(org1.username, org1.password)
    assert token and [n["is_current"] for n in client.list_node()] == [True, False]
    client.close()  # logs out: the token was never saved, so nothing may keep using it
    assert list(tmp_path.iterdir()) == []
    again = Client(url=org1.url, token=token)
    with pytest.raises(exc.AuthenticationError):
        again.list_node()
    again.close()
