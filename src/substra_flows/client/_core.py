"""What every resource part of the client shares: settings, transport, login, and GET/list helpers."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic
import requests

from substra_flows import exceptions as exc
from substra_flows import models
from substra_flows.client.filters import format_filters, format_ordering
from substra_flows.client.pages import ModelT, one_parser, page_parser, parse_model
from substra_flows.config import ClientSettings, resolve_settings
from substra_flows.schemas import SpecT, build_spec, check_key
from substra_flows.transport import Safety, Transport

logger = logging.getLogger("substra_flows")


_ClientT = TypeVar("_ClientT", bound="ClientCore")


class ClientCore:
    """State and plumbing of one client; the resource parts (datasets, functions, plans...) build on it."""

    #: the response model classes answers are parsed into (``substra_flows.models``; the compat
    #: client swaps in the official SDK's models)
    _models: Any = models

    def __init__(
        self,
        *,
        client_name: str | None = None,
        configuration_file: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        retry_timeout: float | None = None,
        insecure: bool | None = None,
        backend_type: str | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        max_attempts: int | None = None,
        backoff: float | None = None,
        backoff_max: float | None = None,
        page_size: int | None = None,
        max_json_bytes: int | None = None,
        strict: bool | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if backend_type not in (None, "remote") and getattr(backend_type, "value", None) != "remote":
            raise exc.ConfigurationError(
                f"backend_type={backend_type!r}: substra_flows only talks to remote servers ('remote')"
            )
        settings, origins = resolve_settings(
            client_name=client_name,
            configuration_file=configuration_file,
            code_values={
                "url": url,
                "token": token,
                "username": username,
                "password": password,
                "retry_timeout": retry_timeout,
                "insecure": insecure,
                "connect_timeout": connect_timeout,
                "read_timeout": read_timeout,
                "max_attempts": max_attempts,
                "backoff": backoff,
                "backoff_max": backoff_max,
                "page_size": page_size,
                "max_json_bytes": max_json_bytes,
                "strict": strict,
            },
        )
        if not settings.url:
            raise exc.ConfigurationError(
                "no url: pass url=..., or set SUBSTRA_<CLIENT_NAME>_URL, or the 'url' key of the "
                "client_name section of the configuration file"
            )
        self.client_name = client_name
        self.settings: ClientSettings = settings
        self._origins = origins
        # a URL passed in code is the caller's to report (the Airflow hook names its connection); one found in
        # the environment or a file is worth saying
        log = logger.debug if origins["url"] == "code" else logger.info
        log("substra client for %s (url from %s)", settings.url, origins["url"])
        self._transport = Transport(
            settings.url,
            token=settings.secret("token"),
            insecure=settings.insecure,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_attempts=settings.max_attempts,
            backoff=settings.backoff,
            backoff_max=settings.backoff_max,
            retry_timeout=settings.retry_timeout,
            max_json_bytes=settings.max_json_bytes,
            session=session,
        )
        self._auth_lock = threading.Lock()
        self._username = settings.username
        self._password = settings.secret("password")
        self._login_info: dict[str, Any] | None = None
        self._sleep = time.sleep
        self._clock = time.monotonic
        self._async_sleep = asyncio.sleep
        if self._username and self._password:
            self._transport.reauthenticate = self._reauthenticate
            if not settings.token:
                self.login(self._username, self._password)

    # -- housekeeping ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the organization."""
        return self._transport.base_url

    @property
    def backend_mode(self) -> str:
        """Always ``"remote"`` (kept for SDK compatibility)."""
        return "remote"

    @property
    def transport(self) -> Transport:
        """The underlying transport (for the steps layer and tests)."""
        return self._transport

    def __repr__(self) -> str:
        token = "'***'" if self._transport.token else "None"
        return (
            f"SubstraClient(url={self.url!r}, client_name={self.client_name!r}, "
            f"username={self._username!r}, token={token})"
        )

    def __enter__(self: _ClientT) -> _ClientT:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Log out (if this client logged in) and release connections."""
        try:
            self.logout()
        finally:
            self._transport.close()

    # -- auth -----------------------------------------------------------------------------

    def login(self, username: str, password: str) -> str:
        """Get a token with username/password (``POST /api-token-auth/``).

        Retried only when the server did not act on it: a connection that never reached it, or 429
        (login is throttled to 40 a minute per IP on a real deployment), after its Retry-After.
        """
        exc.register_secret(password)
        url = self._transport.url("api-token-auth")
        try:
            body = self._transport.request_json(
                "POST",
                url,
                data={"username": username, "password": password},
                safety=Safety.CONNECT_ONLY,
                authenticated=False,
                relogin=False,
            )
        except (exc.InvalidRequest, exc.AuthenticationError) as error:
            raise exc.BadLoginException(
                f"login as {username!r} refused: {error.detail or error}",
                status_code=error.status_code,
                method="POST",
                url=error.url,
                detail=error.detail,
            ) from None
        except exc.AuthorizationError as error:
            if isinstance(error.errors, dict) and error.errors.get("substra_identifier") == "implicit_login_disabled":
                raise exc.UsernamePasswordLoginDisabledException(
                    f"{error}. Username/password login is disabled on this server: generate an API "
                    "token in the web UI and pass it as token=...",
                    status_code=error.status_code,
                    method="POST",
                    url=error.url,
                    detail=error.detail,
                ) from None
            raise
        except exc.InvalidResponse as error:
            raise exc.ConfigurationError(f"login: {error}; is {self.url} the URL of a Substra server?") from None
        if not isinstance(body, dict) or not all(isinstance(body.get(f), str) for f in ("token", "id")):
            raise exc.InvalidResponse("login answer lacks 'token' or 'id'", method="POST", url="/api-token-auth/")
        token = body["token"]
        exc.register_secret(token)
        self._transport.token = token
        self._login_info = {"id": body["id"], "expires_at": body.get("expires_at")}
        self._username, self._password = username, password
        self._transport.reauthenticate = self._reauthenticate
        logger.info("logged in to %s as %s (token expires at %s)", self.url, username, body.get("expires_at"))
        return token

    def logout(self) -> None:
        """Delete the token this client obtained with login() (nothing to do otherwise)."""
        info, self._login_info = self._login_info, None
        if info is None:
            return
        try:
            self._transport.request_json(
                "DELETE",
                self._transport.url("active-api-tokens"),
                params={"id": info["id"]},
                safety=Safety.NEVER,
                relogin=False,
            )
            logger.info("logged out from %s", self.url)
        except exc.SubstraError as error:
            logger.warning("logout from %s failed (the token will expire on its own): %s", self.url, error)
        finally:
            self._transport.token = None

    def _reauthenticate(self, refused_token: str | None) -> bool:
        """401 hook: log in again unless another thread already did since ``refused_token``."""
        with self._auth_lock:
            if self._transport.token and self._transport.token != refused_token:
                return True
            if not (self._username and self._password):
                return False
            try:
                self.login(self._username, self._password)
            except exc.SubstraError as error:
                logger.warning("re-login after 401 failed: %s", error)
                return False
            return True

    # -- organization ----------------------------------------------------------------------

    def organization_info(self) -> models.OrganizationInfo:
        """``GET /info/``: who and what this organization is."""
        parse = one_parser(self._models.OrganizationInfo, "GET /info/")
        return self._transport.request_parsed("GET", self._transport.url("info"), parse)

    def list_organization(self, *args: Any, **kwargs: Any) -> list[models.Organization]:
        """``GET /organization/`` (a plain list, not paginated)."""
        parse = page_parser(self._models.Organization, "GET /organization/")
        return self._transport.list_all(self._transport.url("organization"), parse_page=parse)

    # -- getters and lists (shared by every resource) ------------------------------------------

    def _get(self, route: str, key: str, model: type[ModelT]) -> ModelT:
        """GET one asset by key and parse it."""
        key = check_key(key, "key")
        parse = one_parser(model, f"GET /{route}/{key}/")
        return self._transport.request_parsed("GET", self._transport.url(route, key), parse, key=key)

    def _list(
        self,
        route: str,
        model: type[ModelT],
        filters: Mapping[str, Any] | None,
        order_by: str | None,
        ascending: bool,
        page_size: int | None,
    ) -> list[ModelT]:
        """Validate filters, then fetch every page."""
        params = format_filters(route, filters)
        params.update(format_ordering(route, order_by, ascending))
        params["page_size"] = str(self._page_size(page_size))
        return self._transport.list_all(
            self._transport.url(route), params=params, parse_page=page_parser(model, f"GET /{route}/")
        )

    def _page_size(self, page_size: int | None) -> int:
        """Validated page size (1..10000), defaulting to the client setting."""
        size = self.settings.page_size if page_size is None else page_size
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 10000:
            raise exc.SpecValidationError.for_field("page_size", page_size, "must be an integer in 1..10000")
        return size

    def _spec(self, spec_class: type[SpecT], data: Any) -> SpecT:
        """Validated spec, with this client's ``strict`` setting for unknown keys."""
        return build_spec(spec_class, data, strict=self.settings.strict)

    # -- updates ---------------------------------------------------------------------------------

    def _update(self, route: str, key: str, spec: pydantic.BaseModel) -> None:
        """PUT a name change (idempotent, retried)."""
        key = check_key(key, "key")
        self._transport.request_json(
            "PUT", self._transport.url(route, key), json_body=spec.model_dump(), safety=Safety.SAFE, key=key
        )


def _key_of(body: Any, where: str) -> str:
    """The ``key`` of a creation answer (the only field worth trusting there)."""
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if isinstance(body, dict) and isinstance(body.get("key"), str):
        return body["key"]
    raise exc.InvalidResponse(f"{where}: the answer has no 'key'")


_parse = parse_model
