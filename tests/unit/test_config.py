"""Settings precedence: code > environment (SUBSTRA_<CLIENT>_<ATTR>) > YAML file section."""

from __future__ import annotations

import pytest
import yaml

from substra_flows import SubstraClient
from substra_flows import exceptions as exc
from substra_flows.config import CONFIG_FILE_ENV_VAR, ClientSettings, env_var_name, resolve_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("SUBSTRA_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "substra.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "org-1": {
                    "url": "http://file.example/org-1/",
                    "token": "file-token-0000000000",
                    "retry_timeout": 42,
                    "insecure": True,
                    "backend_type": "remote",
                },
                "org-2": {"url": "http://file.example/org-2"},
            }
        )
    )
    return path


def test_env_var_names_follow_the_sdk():
    assert env_var_name("url", "org-1") == "SUBSTRA_ORG_1_URL"
    assert env_var_name("token", "org1") == "SUBSTRA_ORG1_TOKEN"
    assert env_var_name("retry_timeout", "my client") == "SUBSTRA_MY_CLIENT_RETRY_TIMEOUT"


def test_file_only(config_file):
    settings, origins = resolve_settings(client_name="org-1", configuration_file=config_file)
    assert settings.url == "http://file.example/org-1"  # trailing slash removed
    assert settings.secret("token") == "file-token-0000000000"
    assert settings.retry_timeout == 42 and settings.insecure is True
    assert origins["url"].startswith("configuration file")
    assert origins["read_timeout"] == "default"


def test_env_beats_file_and_code_beats_env(config_file, monkeypatch):
    monkeypatch.setenv("SUBSTRA_ORG_1_URL", "http://env.example")
    monkeypatch.setenv("SUBSTRA_ORG_1_RETRY_TIMEOUT", "7")
    monkeypatch.setenv("SUBSTRA_ORG_1_INSECURE", "false")
    settings, origins = resolve_settings(client_name="org-1", configuration_file=config_file)
    assert settings.url == "http://env.example" and settings.retry_timeout == 7 and settings.insecure is False
    assert origins["url"] == "environment variable SUBSTRA_ORG_1_URL"
    assert settings.secret("token") == "file-token-0000000000"  # not overridden: file value stays
    settings, origins = resolve_settings(
        client_name="org-1",
        configuration_file=config_file,
        code_values={"url": "http://code.example", "insecure": None},
    )
    assert settings.url == "http://code.example" and origins["url"] == "code"
    assert settings.insecure is False  # None in code means "not given"


def test_without_client_name_only_code_counts(monkeypatch):
    monkeypatch.setenv("SUBSTRA_ORG1_URL", "http://env.example")
    settings, _ = resolve_settings(code_values={"url": "http://code.example"})
    assert settings.url == "http://code.example"
    settings, _ = resolve_settings()
    assert settings.url is None


def test_config_file_path_from_env(config_file, monkeypatch):
    monkeypatch.setenv(CONFIG_FILE_ENV_VAR, str(config_file))
    settings, _ = resolve_settings(client_name="org-2")
    assert settings.url == "http://file.example/org-2"
    monkeypatch.setenv(CONFIG_FILE_ENV_VAR, str(config_file) + ".missing")
    settings, _ = resolve_settings(client_name="org-2")  # warned, not fatal
    assert settings.url is None


def test_config_errors(config_file, tmp_path):
    with pytest.raises(exc.ConfigurationError, match="client_name"):
        resolve_settings(configuration_file=config_file)
    with pytest.raises(exc.ConfigurationError, match="does not exist"):
        resolve_settings(client_name="x", configuration_file=tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(exc.ConfigurationError, match="mapping"):
        resolve_settings(client_name="x", configuration_file=bad)
    with pytest.raises(exc.ConfigurationError, match=r"read_timeout='soon' \(from code\)"):
        resolve_settings(code_values={"read_timeout": "soon"})
    with pytest.raises(exc.ConfigurationError, match="http"):
        resolve_settings(code_values={"url": "ftp://x"})
    with pytest.raises(exc.ConfigurationError, match="unknown client setting"):
        resolve_settings(code_values={"colour": "blue"})


def test_invalid_secret_value_is_not_echoed(monkeypatch):
    with pytest.raises(exc.ConfigurationError) as info:
        resolve_settings(code_values={"token": ["not", "a", "string-secret-value"]})
    assert "string-secret-value" not in str(info.value) and "token=***" in str(info.value)


def test_client_uses_resolved_settings(config_file, monkeypatch):
    monkeypatch.setenv("SUBSTRA_ORG_1_READ_TIMEOUT", "9")
    client = SubstraClient(client_name="org-1", configuration_file=config_file, connect_timeout=2)
    assert client.url == "http://file.example/org-1"
    assert client.transport.timeout == (2, 9)
    assert client.transport.retry_timeout == 42
    assert client.transport.session.verify is False


def test_client_without_url_fails_clearly():
    with pytest.raises(exc.ConfigurationError, match="no url"):
        SubstraClient(token="x" * 40)


def test_insecure_logs_a_warning(caplog):
    SubstraClient(url="https://x.example", insecure=True)
    assert "TLS certificate verification is disabled" in caplog.text


def test_settings_repr_masks_secrets():
    settings = ClientSettings(url="http://x", token="tok-1234567890abcdef", password="pw-abcdefgh")
    text = repr(settings)
    assert "tok-1234567890abcdef" not in text and "pw-abcdefgh" not in text
    assert "token='***'" in text and "password='***'" in text and str(settings) == text
