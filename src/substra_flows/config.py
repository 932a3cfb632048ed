"""Client settings, resolved from three sources: code > environment > YAML file.

As in the official SDK, the environment variables and the YAML section are selected by a
``client_name``: ``SUBSTRA_<CLIENT_NAME>_<ATTR>`` (e.g. ``SUBSTRA_ORG1_URL``) and the top-level
key ``client_name`` of the file. Without a ``client_name`` only values given in code count.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import pydantic
from pydantic import ConfigDict, Field, SecretStr

from substra_flows.exceptions import ConfigurationError, register_secret

logger = logging.getLogger("substra_flows")

CONFIG_FILE_ENV_VAR = "SUBSTRA_CLIENTS_CONFIGURATION_FILE_PATH"
DEFAULT_RETRY_TIMEOUT = 300.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 120.0
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_BACKOFF = 1.0
DEFAULT_BACKOFF_MAX = 30.0
DEFAULT_PAGE_SIZE = 1000
DEFAULT_MAX_JSON_BYTES = 256 * 1024 * 1024
_SECRET_FIELDS = frozenset({"token", "password"})
# keys the official SDK accepts in its file / environment that have no meaning here
_IGNORED_KEYS = frozenset({"backend_type"})


class ClientSettings(pydantic.BaseModel):
    """Every knob of :class:`~substra_flows.client.SubstraClient`, validated and typed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    insecure: bool = False
    retry_timeout: float = Field(DEFAULT_RETRY_TIMEOUT, ge=0)
    connect_timeout: float = Field(DEFAULT_CONNECT_TIMEOUT, gt=0)
    read_timeout: float = Field(DEFAULT_READ_TIMEOUT, gt=0)
    max_attempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=1)
    backoff: float = Field(DEFAULT_BACKOFF, ge=0)
    backoff_max: float = Field(DEFAULT_BACKOFF_MAX, ge=0)
    page_size: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=10000)
    max_json_bytes: int = Field(DEFAULT_MAX_JSON_BYTES, ge=1024)
    #: refuse spec keys the spec does not define (by default they are dropped with a warning, as the SDK drops them)
    strict: bool = False

    @pydantic.field_validator("url")
    @classmethod
    def _normalize_url(cls, value: str | None) -> str | None:
        """Strip trailing slashes and insist on http(s), so routes join predictably."""
        if value is None or value == "":
            return None
        value = value.strip().rstrip("/")
        if not re.match(r"^https?://[^/]+", value):
            raise ValueError("must start with http:// or https:// followed by a host")
        return value

    def secret(self, name: str) -> str | None:
        """Plain value of ``token`` or ``password`` (None when unset)."""
        value = getattr(self, name)
        return value.get_secret_value() if value is not None else None

    def __repr__(self) -> str:
        parts = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in _SECRET_FIELDS:
                shown = "'***'" if value is not None else "None"
            else:
                shown = repr(value)
            parts.append(f"{name}={shown}")
        return f"ClientSettings({', '.join(parts)})"

    __str__ = __repr__


def env_var_name(attribute: str, client_name: str) -> str:
    """Environment variable holding ``attribute`` for ``client_name``, e.g. SUBSTRA_ORG1_URL."""
    return f"SUBSTRA_{_upper_slug(client_name)}_{_upper_slug(attribute)}"


def resolve_settings(
    *,
    client_name: str | None = None,
    configuration_file: str | os.PathLike[str] | None = None,
    code_values: Mapping[str, Any] | None = None,
) -> tuple[ClientSettings, dict[str, str]]:
    """Merge code values, environment and YAML file into settings; also return each value's origin.

    ``None`` in ``code_values`` means "not given" (so a lower-precedence source applies).
    """
    code_values = dict(code_values or {})
    unknown = set(code_values) - set(ClientSettings.model_fields)
    if unknown:
        raise ConfigurationError(f"unknown client setting(s): {sorted(unknown)}")

    file_section = _read_file_section(client_name, configuration_file)
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name in ClientSettings.model_fields:
        if code_values.get(name) is not None:
            merged[name], origins[name] = code_values[name], "code"
            continue
        if client_name:
            var = env_var_name(name, client_name)
            if var in os.environ:
                merged[name], origins[name] = os.environ[var], f"environment variable {var}"
                continue
            if name in file_section and file_section[name] is not None:
                merged[name], origins[name] = file_section[name], f"configuration file section {client_name!r}"
                continue
        origins[name] = "default"

    for name in _SECRET_FIELDS:
        if isinstance(merged.get(name), str):
            register_secret(merged[name])
    try:
        settings = ClientSettings(**merged)
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            origin = origins.get(field, "?")
            value = "***" if field in _SECRET_FIELDS else repr(err.get("input"))
            problems.append(f"{field}={value} (from {origin}): {err['msg']}")
        raise ConfigurationError("invalid client settings: " + "; ".join(problems)) from None
    return settings, origins


def _read_file_section(client_name: str | None, configuration_file: str | os.PathLike[str] | None) -> dict:
    """Load the ``client_name`` section of the YAML file (empty when there is no file)."""
    from_env = False
    if configuration_file is None:
        env_path = os.environ.get(CONFIG_FILE_ENV_VAR)
        if env_path:
            configuration_file, from_env = env_path, True
    if not configuration_file:
        return {}
    if not client_name:
        raise ConfigurationError(
            f"configuration file {configuration_file} cannot be used without a client_name "
            "(it selects the section of the file to read)"
        )
    path = pathlib.Path(configuration_file)
    if not path.is_file():
        if from_env:
            logger.warning("configuration file %s (from %s) does not exist; ignored", path, CONFIG_FILE_ENV_VAR)
            return {}
        raise ConfigurationError(f"configuration file {path} does not exist")
    import yaml  # only when a file is used: it is a tenth of the client's import time

    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read configuration file {path}: {exc}") from None
    if not isinstance(content, dict):
        raise ConfigurationError(f"configuration file {path} must hold a mapping of client names")
    section = content.get(client_name) or {}
    if not isinstance(section, dict):
        raise ConfigurationError(f"section {client_name!r} of configuration file {path} must be a mapping")
    unknown = set(section) - set(ClientSettings.model_fields) - _IGNORED_KEYS
    if unknown:
        logger.warning("configuration file %s, section %r: unknown keys %s ignored", path, client_name, sorted(unknown))
    return {k: v for k, v in section.items() if k in ClientSettings.model_fields}


def _upper_slug(text: str) -> str:
    """ASCII upper-case slug with underscores, as the SDK builds environment variable names."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").upper()
