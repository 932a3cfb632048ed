"""The SubstraCredentials block: validation, client settings, secrecy, saving, registration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from fastapi.encoders import jsonable_encoder
from prefect.settings import get_current_settings
from pydantic import ValidationError

from substra_flows import SubstraClient
from substra_flows.prefect import SubstraCredentials, resolve_credentials

TOKEN = "credentials-test-token-0a1b2c3d4e5f6a7b8c9d"
PASSWORD = "credentials-test-password-9f8e7d6c"


def test_a_token_or_a_username_and_password_is_required():
    with pytest.raises(ValidationError, match="give a token"):
        SubstraCredentials(url="https://substra.test")
    with pytest.raises(ValidationError, match="give a token"):
        SubstraCredentials(url="https://substra.test", username="alice")
    assert SubstraCredentials(url="https://substra.test", token=TOKEN).token is not None
    assert SubstraCredentials(url="https://substra.test", username="alice", password=PASSWORD).username == "alice"


@pytest.mark.parametrize("url", ["substra.test", "ftp://substra.test", "https://", ""])
def test_urls_must_be_http(url):
    with pytest.raises(ValidationError, match="http"):
        SubstraCredentials(url=url, token=TOKEN)


def test_urls_lose_their_trailing_slash():
    block = SubstraCredentials(url="https://substra.test/org-1/", token=TOKEN, frontend_url="https://ui.test/")
    assert block.url == "https://substra.test/org-1"
    assert block.compute_plan_url("k") == "https://ui.test/compute_plans/k/tasks"
    assert SubstraCredentials(url="https://substra.test", token=TOKEN).compute_plan_url("k") == (
        "https://substra.test/compute_plan/k/"
    )


def test_get_client_passes_every_setting():
    block = SubstraCredentials(
        url="https://substra.test",
        token=TOKEN,
        insecure=True,
        connect_timeout=3,
        read_timeout=7,
        retry_timeout=11,
        max_attempts=2,
        backoff=0.5,
        backoff_max=4,
        total_timeout=9,
        max_download_bytes=1024,
    )
    with block.get_client() as client:
        assert isinstance(client, SubstraClient)
        assert client.url == "https://substra.test"
        settings = client.settings
        assert settings.secret("token") == TOKEN
        assert settings.insecure is True
        assert (settings.connect_timeout, settings.read_timeout, settings.retry_timeout) == (3, 7, 11)
        assert (settings.max_attempts, settings.backoff, settings.backoff_max) == (2, 0.5, 4)
        assert (settings.total_timeout, settings.max_download_bytes) == (9, 1024)
    with block.get_client(retry_timeout=1) as client:
        assert client.settings.retry_timeout == 1


def test_secrets_are_masked_in_reprs_and_serialized_parameters():
    block = SubstraCredentials(url="https://substra.test", token=TOKEN, username="alice", password=PASSWORD)
    for text in (repr(block), str(block), json.dumps(jsonable_encoder(block)), block.model_dump_json()):
        assert TOKEN not in text
        assert PASSWORD not in text
    with block.get_client() as client:  # a token is given: no login
        assert TOKEN not in repr(client)


def test_saved_blocks_load_by_name_with_their_secrets():
    SubstraCredentials(url="https://substra.test", token=TOKEN, frontend_url="https://ui.test").save(
        "credentials-test", overwrite=True
    )
    loaded = resolve_credentials("credentials-test")
    assert loaded.token is not None and loaded.token.get_secret_value() == TOKEN
    assert loaded.frontend_url == "https://ui.test"
    block = SubstraCredentials(url="https://substra.test", token=TOKEN)
    assert resolve_credentials(block) is block
    with pytest.raises(TypeError):
        resolve_credentials(42)  # type: ignore[arg-type]


def test_the_collection_entry_point_names_the_package():
    names = {ep.name: ep.value for ep in entry_points(group="prefect.collections")}
    assert names.get("substra_flows") == "substra_flows.prefect"


def test_prefect_block_register_finds_the_block():
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "substra_flows.prefect"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Substra Credentials" in result.stdout
