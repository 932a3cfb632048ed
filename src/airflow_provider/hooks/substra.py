"""SubstraHook: turns an Airflow ``substra`` connection into a :class:`~substra_flows.SubstraClient`.

Connection fields: ``host`` is the Substra API URL; ``password`` is an API token, or, together
with ``login``, a user's password (the client then logs in). Extras: ``frontend_url`` (target
of the "See in Substra" link), ``insecure``, ``connect_timeout``, ``read_timeout``,
``retry_timeout``, ``max_attempts``, ``backoff``, ``backoff_max``, ``total_timeout`` (seconds one
HTTP exchange may last in all, 0: none), ``max_download_bytes`` (largest download, 0: no limit).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from substra_flows import SubstraClient, links
from substra_flows.exceptions import ConfigurationError, SubstraError, redact, register_secret

if TYPE_CHECKING:
    from airflow.sdk import Connection

CONN_TYPE = "substra"
DEFAULT_CONN_ID = "substra_default"

#: client settings that may come from the connection's extra, with their types
FLOAT_EXTRAS = ("connect_timeout", "read_timeout", "retry_timeout", "backoff", "backoff_max", "total_timeout")
INT_EXTRAS = ("max_attempts", "max_download_bytes")
_TRUE = {"true", "1", "yes", "on", "y", "t"}
_FALSE = {"false", "0", "no", "off", "n", "f", ""}

# Clients shared by the triggers of one process (a triggerer runs hundreds of waits in one
# event loop): one session and one login per connection, not one per trigger.
_SHARED_CLIENTS: dict[str, SubstraClient] = {}
_SHARED_LOCK = threading.Lock()


def _mask(value: str | None) -> None:
    """Hide a secret from Airflow's task logs and from substra_flows' own error texts."""
    if not value:
        return
    register_secret(value)
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(value)
    except Exception:  # masking is best effort outside a task (e.g. in a plain script)
        pass


def _extra_value(extra: Mapping[str, Any], name: str) -> Any:
    """An extra by its plain name, or by the ``extra__substra__<name>`` form older UIs wrote."""
    for candidate in (name, f"extra__{CONN_TYPE}__{name}"):
        value = extra.get(candidate)
        if value is not None and value != "":
            return value
    return None


def _as_bool(name: str, value: Any) -> bool:
    """A boolean extra given as a JSON bool or as text."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"connection extra {name!r} must be a boolean, got {value!r}")


def _as_number(name: str, value: Any, kind: type) -> float | int:
    """A numeric extra given as a number or as text."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"connection extra {name!r} must be a number, got {value!r}") from None


def api_url(conn: Connection) -> str:
    """The Substra API URL of a connection.

    ``host`` normally holds the full URL (``https://substra.example.org/prefix``). A bare host
    name, as a connection URI gives it, becomes ``https://host[:port][/schema]`` (``schema``
    ``http``/``https`` picks the scheme instead of a path).
    """
    host = (conn.host or "").strip()
    if not host:
        raise ValueError(f"connection {conn.conn_id!r} has no host: set it to the Substra API URL")
    if "://" in host:
        return host.rstrip("/")
    schema = (conn.schema or "").strip().strip("/")
    scheme = schema if schema in ("http", "https") else "https"
    url = f"{scheme}://{host}"
    if conn.port:
        url += f":{conn.port}"
    if schema and schema not in ("http", "https"):
        url += f"/{schema}"
    return url


def client_kwargs(conn: Connection, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments of :class:`SubstraClient` for a connection (``overrides`` win)."""
    extra = conn.extra_dejson or {}
    kwargs: dict[str, Any] = {"url": api_url(conn)}
    if conn.login:
        kwargs["username"] = conn.login
        kwargs["password"] = conn.password
    else:
        kwargs["token"] = conn.password
    if not conn.password:
        raise ValueError(
            f"connection {conn.conn_id!r} has no password: put an API token there "
            "(or a username in login and its password)"
        )
    insecure = _extra_value(extra, "insecure")
    if insecure is not None:
        kwargs["insecure"] = _as_bool("insecure", insecure)
    for name in FLOAT_EXTRAS:
        value = _extra_value(extra, name)
        if value is not None:
            kwargs[name] = _as_number(name, value, float)
    for name in INT_EXTRAS:
        value = _extra_value(extra, name)
        if value is not None:
            kwargs[name] = _as_number(name, value, int)
    kwargs.update(overrides or {})
    return kwargs


def frontend_url(conn: Connection) -> str | None:
    """The web app URL from the connection's extra, if any."""
    value = _extra_value(conn.extra_dejson or {}, "frontend_url")
    return str(value).strip().rstrip("/") if value else None


def compute_plan_url(conn: Connection, compute_plan_key: str) -> str:
    """Where a person can look at a compute plan: the web app when known, else the API."""
    return links.compute_plan_url(api_url(conn), compute_plan_key, frontend_url(conn))


def _fingerprint(conn: Connection, overrides: Mapping[str, Any]) -> str:
    """A key for the shared-client cache that changes whenever the connection does (no secret kept)."""
    material = json.dumps(
        [conn.conn_id, conn.host, conn.schema, conn.port, conn.login, conn.password, conn.extra, dict(overrides)],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(material.encode()).hexdigest()


def clear_shared_clients() -> None:
    """Close and forget the clients shared by triggers (tests, or after rotating a token)."""
    with _SHARED_LOCK:
        clients = list(_SHARED_CLIENTS.values())
        _SHARED_CLIENTS.clear()
    for client in clients:
        try:
            client.close()
        except Exception:  # closing is best effort
            pass


class SubstraHook(BaseHook):
    """Connection to one Substra organization; :meth:`get_conn` gives a ready :class:`SubstraClient`.

    :param substra_conn_id: the Airflow connection id (type ``substra``).
    :param client_options: extra :class:`SubstraClient` keyword arguments; they win over the connection.
    """

    conn_name_attr = "substra_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Substra"

    def __init__(
        self,
        substra_conn_id: str = DEFAULT_CONN_ID,
        *,
        client_options: Mapping[str, Any] | None = None,
        logger_name: str | None = None,
    ) -> None:
        super().__init__(logger_name=logger_name)
        self.substra_conn_id = substra_conn_id
        self.client_options = dict(client_options or {})
        self._connection: Connection | None = None
        self._client: SubstraClient | None = None

    # -- connection ------------------------------------------------------------------------

    @property
    def connection(self) -> Connection:
        """The Airflow connection, fetched once (secrets are masked in task logs)."""
        if self._connection is None:
            self._connection = self._remember(self.get_connection(self.substra_conn_id))
        return self._connection

    async def aconnection(self) -> Connection:
        """:attr:`connection` without blocking the event loop (for triggers)."""
        if self._connection is None:
            self._connection = self._remember(await self.aget_connection(self.substra_conn_id))
        return self._connection

    @staticmethod
    def _remember(conn: Connection) -> Connection:
        _mask(conn.password)
        return conn

    # -- clients --------------------------------------------------------------------------

    def _new_client(self, conn: Connection) -> SubstraClient:
        """Build a client (this may log in, so it does HTTP)."""
        try:
            client = SubstraClient(**client_kwargs(conn, self.client_options))
        except (ValueError, ConfigurationError) as error:  # bad fields: name the connection, never the secret
            raise ValueError(redact(f"connection {self.substra_conn_id!r} is not usable: {error}")) from None
        _mask(client.transport.token)  # the token a login obtained
        return client

    def get_conn(self) -> SubstraClient:
        """A client for this connection, created on first use and kept by the hook."""
        if self._client is None:
            self.log.info("Connecting to Substra at %s (connection %s)", api_url(self.connection), self.substra_conn_id)
            self._client = self._new_client(self.connection)
        return self._client

    async def aget_conn(self, *, shared: bool = False) -> SubstraClient:
        """A client, fetched without blocking the event loop (connection lookup and login run off-loop).

        ``shared=True`` reuses one client per connection across the whole process, so that a
        triggerer running many waits keeps one HTTP session and one login per connection.
        """
        if self._client is not None:
            return self._client
        conn = await self.aconnection()
        if not shared:
            self._client = await asyncio.to_thread(self._new_client, conn)
            return self._client
        cache_key = _fingerprint(conn, self.client_options)
        client = _SHARED_CLIENTS.get(cache_key)  # fast path, never waits on a lock in the event loop
        if client is None:
            client = await asyncio.to_thread(self._shared_client, conn, cache_key)
        self._client = client
        return client

    def _shared_client(self, conn: Connection, cache_key: str) -> SubstraClient:
        """The process-wide client of a connection, created once (one login) whatever the concurrency."""
        with _SHARED_LOCK:
            client = _SHARED_CLIENTS.get(cache_key)
            if client is None:
                client = _SHARED_CLIENTS[cache_key] = self._new_client(conn)
            return client

    def close(self) -> None:
        """Release this hook's own client (shared clients stay for the other triggers)."""
        client, self._client = self._client, None
        if client is not None and client not in _SHARED_CLIENTS.values():
            client.close()

    # -- links -----------------------------------------------------------------------------

    def compute_plan_url(self, compute_plan_key: str) -> str:
        """Link to a compute plan: the frontend URL extra when set, else the API URL."""
        return compute_plan_url(self.connection, compute_plan_key)

    # -- UI ---------------------------------------------------------------------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form's field behaviour for Airflow 3.1 (3.2 reads it from get_provider_info, and
        then never calls this)."""
        from airflow_provider import get_provider_info

        (conn_type,) = get_provider_info()["connection-types"]
        behaviour = conn_type["ui-field-behaviour"]
        return {
            "hidden_fields": list(behaviour["hidden-fields"]),
            "relabeling": dict(behaviour["relabeling"]),
            "placeholders": dict(behaviour["placeholders"]),
        }

    def test_connection(self) -> tuple[bool, str]:
        """Ask the server who it is (``GET /info/``) with the connection's credentials."""
        try:
            info = self.get_conn().organization_info()
        except (SubstraError, ValueError) as error:
            return False, redact(f"{type(error).__name__}: {error}")
        except Exception as error:  # the UI wants a message, not a traceback
            return False, redact(f"{type(error).__name__}: {error}")
        finally:
            self.close()
        version = f", version {info.version}" if info.version else ""
        return True, f"Connected to Substra organization {info.organization_id}{version}"
