"""The ``SubstraCredentials`` block: how Prefect flows reach one Substra organization.

The block only holds settings; :meth:`SubstraCredentials.get_client` turns them into the shared
:class:`~substra_flows.SubstraClient`, which owns timeouts, retries and authentication. Secrets are
``SecretStr`` fields, so Prefect masks them in the UI, in flow-run parameters and in reprs.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Union

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from substra_flows import links
from substra_flows.client import SubstraClient
from substra_flows.config import (
    DEFAULT_BACKOFF,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_DOWNLOAD_BYTES,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RETRY_TIMEOUT,
    DEFAULT_TOTAL_TIMEOUT,
)
from substra_flows.exceptions import register_secret

_HTTP_URL = re.compile(r"^https?://[^/\s]+")


class SubstraCredentials(Block):
    """Connection settings of one Substra organization: URL, API token or username/password,
    TLS, timeouts and retry budget, plus the web app URL used for links in artifacts.

    Example:
        ```python
        from substra_flows.prefect import SubstraCredentials

        credentials = SubstraCredentials.load("BLOCK_NAME")
        with credentials.get_client() as client:
            print(client.organization_info().organization_id)
        ```
    """

    _block_type_name = "Substra Credentials"
    _block_type_slug = "substra-credentials"
    _documentation_url = "https://docs.substra.org/"  # type: ignore[assignment]
    _description = (
        "Connection settings of one Substra organization (URL, API token or username and password, "
        "timeouts, retries), for the substra-flows Prefect tasks and flows."
    )

    url: str = Field(
        ...,
        title="URL",
        description="Base URL of the organization's Substra backend, e.g. https://substra-backend.org-1.example.com.",
    )
    token: Optional[SecretStr] = Field(
        default=None,
        description="API token generated in the Substra web app. Give it, or a username and a password.",
    )
    username: Optional[str] = Field(default=None, description="User to log in as, when no token is given.")
    password: Optional[SecretStr] = Field(default=None, description="Password of that user.")
    insecure: bool = Field(default=False, description="Skip TLS certificate verification (only for test deployments).")
    connect_timeout: float = Field(default=DEFAULT_CONNECT_TIMEOUT, gt=0, description="Seconds to connect.")
    read_timeout: float = Field(default=DEFAULT_READ_TIMEOUT, gt=0, description="Seconds to wait for an answer.")
    retry_timeout: float = Field(
        default=DEFAULT_RETRY_TIMEOUT,
        ge=0,
        description="Seconds one call keeps being retried on transient errors (connection, 429, 502-504).",
    )
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, description="Attempts per call at most.")
    backoff: float = Field(default=DEFAULT_BACKOFF, ge=0, description="First retry delay, doubled at each attempt.")
    backoff_max: float = Field(default=DEFAULT_BACKOFF_MAX, ge=0, description="Longest delay between two attempts.")
    total_timeout: float = Field(
        default=DEFAULT_TOTAL_TIMEOUT,
        ge=0,
        description="Seconds one HTTP exchange may last in all, connect and every read (0: socket timeouts only).",
    )
    max_download_bytes: int = Field(
        default=DEFAULT_MAX_DOWNLOAD_BYTES, ge=0, description="Largest file a download may write (0: no limit)."
    )
    frontend_url: Optional[str] = Field(
        default=None,
        title="Frontend URL",
        description="Base URL of the Substra web app, used to link compute plans from artifacts.",
    )

    @field_validator("url", "frontend_url")
    @classmethod
    def _check_url(cls, value: Optional[str], info: ValidationInfo) -> Optional[str]:
        """Accept only http(s) URLs, without trailing slash, so links and routes join predictably."""
        if (value is None or value == "") and info.field_name == "frontend_url":
            return None
        value = (value or "").strip().rstrip("/")
        if not _HTTP_URL.match(value):
            raise ValueError("must start with http:// or https:// followed by a host")
        return value

    @model_validator(mode="after")
    def _check_auth(self) -> SubstraCredentials:
        """Require a way to authenticate: a token, or both a username and a password."""
        has_login = bool(self.username) and self.password is not None
        if self.token is None and not has_login:
            raise ValueError("give a token, or both a username and a password")
        if (self.username is None) != (self.password is None) and self.token is None:
            raise ValueError("username and password go together")
        return self

    def get_client(self, **overrides: Any) -> SubstraClient:
        """A new :class:`SubstraClient` for this organization (close it, or use it in a ``with`` block).

        ``overrides`` replace settings for this client only, e.g. ``retry_timeout=30`` for a
        clean-up call that must not hang.
        """
        settings: dict[str, Any] = {
            "url": self.url,
            "token": self.token.get_secret_value() if self.token is not None else None,
            "username": self.username,
            "password": self.password.get_secret_value() if self.password is not None else None,
            "insecure": self.insecure,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "retry_timeout": self.retry_timeout,
            "max_attempts": self.max_attempts,
            "backoff": self.backoff,
            "backoff_max": self.backoff_max,
            "total_timeout": self.total_timeout,
            "max_download_bytes": self.max_download_bytes,
        }
        settings.update(overrides)
        # error messages and logs of the client mask these from now on
        register_secret(settings["token"])
        register_secret(settings["password"])
        return SubstraClient(**settings)

    def compute_plan_url(self, compute_plan_key: str) -> str:
        """Where a person can look at the plan: its page in the web app, else its API resource."""
        return links.compute_plan_url(self.url, compute_plan_key, self.frontend_url)


CredentialsLike = Union[SubstraCredentials, str]


def resolve_credentials(credentials: CredentialsLike) -> SubstraCredentials:
    """A block as is, or the saved block of that name (deployments pass names, keeping secrets out of parameters)."""
    if isinstance(credentials, SubstraCredentials):
        return credentials
    if isinstance(credentials, str):
        return SubstraCredentials.load(credentials, _sync=True)  # type: ignore[call-arg,return-value]
    raise TypeError(
        f"credentials must be a SubstraCredentials block or the name of a saved one, not {type(credentials).__name__}"
    )


async def aresolve_credentials(credentials: CredentialsLike) -> SubstraCredentials:
    """Awaitable :func:`resolve_credentials`."""
    if isinstance(credentials, str):
        return await SubstraCredentials.aload(credentials)
    return resolve_credentials(credentials)
