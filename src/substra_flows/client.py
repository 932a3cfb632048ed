"""SubstraClient: the official SDK 1.0 client surface over a hardened transport.

Method names, argument names and spec dicts are the SDK's (``add_dataset``,
``add_compute_plan``, ``wait_task``, ``get_performances``...). What differs is underneath:
timeouts on every call, retries only where safe, idempotent plan/task creation with
client-chosen keys, one wait implementation for sync and async callers, and errors that name
the asset and carry the server's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import pathlib
import tarfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

import pydantic
import requests

from substra_flows import exceptions as exc
from substra_flows import models, schemas, waiting
from substra_flows.config import ClientSettings, resolve_settings
from substra_flows.schemas import build_spec, check_key
from substra_flows.transport import Safety, Transport, is_ambiguous, safe_join

logger = logging.getLogger("substra_flows")

DEFAULT_BATCH_SIZE = 500
LOG_TAIL_LINES = waiting.LOG_TAIL_LINES
_CONFIRM_CHUNK = 100  # task keys per confirmation GET (keeps the URL well under proxy limits)
#: namespace of the implicit plan that add_task creates for a task given without a plan
IMPLICIT_PLAN_NAMESPACE = uuid.UUID("0b6f5a52-8a4e-4f7e-9a43-5b7c2f1e9d10")

GENERATED_DESCRIPTION = b"""# No description given

This dataset was registered without a description file.
"""

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)

# --------------------------------------------------------------------------------------------
# Filters and ordering per route (substra-rest-api.md 4.2-4.3)
# --------------------------------------------------------------------------------------------

_LIST, _SINGLE, _NAME, _METADATA, _STATUS = "list", "single", "name", "metadata", "status"

ALLOWED_FILTERS: dict[str, dict[str, str]] = {
    "data_manager": {"key": _LIST, "name": _NAME, "owner": _LIST, "data_sample_key": _LIST},
    "data_sample": {"key": _LIST, "owner": _LIST, "dataset_key": _SINGLE},
    "function": {"key": _LIST, "name": _NAME, "owner": _LIST, "compute_plan_key": _LIST},
    "compute_plan": {
        "key": _LIST,
        "name": _NAME,
        "owner": _LIST,
        "tag": _LIST,
        "status": _STATUS,
        "function_key": _SINGLE,
        "creator": _LIST,
        "metadata": _METADATA,
    },
    "task": {
        "key": _LIST,
        "owner": _LIST,
        "worker": _LIST,
        "rank": _LIST,
        "tag": _LIST,
        "status": _STATUS,
        "compute_plan_key": _LIST,
        "function_key": _SINGLE,
        "metadata": _METADATA,
    },
    "model": {"key": _LIST, "owner": _LIST, "compute_task_key": _LIST},
}

#: filters the SDK offers but the 1.0 server silently ignores (the list would come back unfiltered)
IGNORED_BY_SERVER: dict[str, set[str]] = {
    "data_manager": {"permissions", "compute_plan_key", "function_key"},
    "data_sample": {"compute_plan_key", "function_key"},
    "function": {"permissions", "dataset_key", "data_sample_key"},
    "compute_plan": {"worker", "dataset_key", "data_sample_key"},
    "task": set(),
    "model": {"permissions"},
}

ALLOWED_ORDERING: dict[str, set[str]] = {
    "data_manager": {"creation_date", "key", "name", "owner"},
    "data_sample": {"creation_date", "key", "owner"},
    "function": {"creation_date", "key", "name", "owner"},
    "compute_plan": {
        "creation_date",
        "start_date",
        "end_date",
        "key",
        "owner",
        "status",
        "tag",
        "name",
        "duration",
        "creator",
    },
    "task": {
        "creation_date",
        "start_date",
        "end_date",
        "key",
        "owner",
        "rank",
        "status",
        "function__name",
        "tag",
        "compute_plan_key",
        "duration",
    },
    "model": {"creation_date", "key"},
}

_STATUS_VALUES: dict[str, set[str]] = {
    "compute_plan": {s.value for s in models.ComputePlanStatus},
    "task": {s.value for s in models.ComputeTaskStatus},
}


def format_filters(route: str, filters: Mapping[str, Any] | None) -> dict[str, str]:
    """Check ``filters`` against what ``route`` supports and encode them as query parameters.

    Lists become comma-joined values; ``name`` becomes ``match``; ``metadata`` becomes compact
    JSON. Filters the server would silently ignore are refused rather than returning an
    unfiltered list.
    """
    if not filters:
        return {}
    if not isinstance(filters, Mapping):
        raise exc.FilterFormatError.for_field("filters", filters, "must be a dict")
    allowed = ALLOWED_FILTERS[route]
    params: dict[str, str] = {}
    for name, value in filters.items():
        kind = allowed.get(name)
        if kind is None:
            if name in IGNORED_BY_SERVER.get(route, set()):
                why = "the server ignores it and would return an unfiltered list"
            else:
                why = f"not a filter of {route}; allowed: {sorted(allowed)}"
            raise exc.NotAllowedFilterError.for_field(f"filters.{name}", value, why)
        if kind == _NAME:
            if not isinstance(value, str):
                raise exc.FilterFormatError.for_field(f"filters.{name}", value, "must be a string")
            params["match"] = value
        elif kind == _METADATA:
            params["metadata"] = _format_metadata_filter(value)
        else:
            values = [value] if isinstance(value, (str, int)) else value
            if not isinstance(values, (list, tuple, set)) or not values:
                raise exc.FilterFormatError.for_field(f"filters.{name}", value, "must be a non-empty list")
            texts = [str(v).replace(" ", "") for v in values]
            if any("," in t or not t for t in texts):
                raise exc.FilterFormatError.for_field(
                    f"filters.{name}", value, "values must be non-empty and contain no comma"
                )
            if kind == _SINGLE and len(texts) > 1:
                raise exc.FilterFormatError.for_field(
                    f"filters.{name}", value, "the server accepts a single value for this filter"
                )
            if kind == _STATUS:
                bad = [t for t in texts if t not in _STATUS_VALUES[route]]
                if bad:
                    raise exc.FilterFormatError.for_field(
                        f"filters.{name}", value, f"unknown status {bad}; use {sorted(_STATUS_VALUES[route])}"
                    )
            params[name] = ",".join(texts)
    return params


def _format_metadata_filter(value: Any) -> str:
    """Validate ``[{"key", "type": is|contains|exists, "value"}]`` and encode it as compact JSON."""
    if not isinstance(value, list) or not value:
        raise exc.FilterFormatError.for_field("filters.metadata", value, "must be a non-empty list of dicts")
    for i, item in enumerate(value):
        where = f"filters.metadata.{i}"
        if not isinstance(item, Mapping) or "key" not in item or "type" not in item:
            raise exc.FilterFormatError.for_field(where, item, "must be a dict with 'key' and 'type'")
        if item["type"] not in ("is", "contains", "exists"):
            raise exc.FilterFormatError.for_field(f"{where}.type", item["type"], "must be is, contains or exists")
        if item["type"] != "exists" and not isinstance(item.get("value"), str):
            raise exc.FilterFormatError.for_field(
                f"{where}.value", item.get("value"), "a string is required for 'is' and 'contains'"
            )
    return json.dumps([dict(item) for item in value], separators=(",", ":"))


def format_ordering(route: str, order_by: str | None, ascending: bool) -> dict[str, str]:
    """``ordering`` query parameter, refusing fields the route cannot sort on."""
    if order_by is None:
        return {}
    if order_by not in ALLOWED_ORDERING[route]:
        raise exc.OrderingFormatError.for_field(
            "order_by", order_by, f"{route} can be ordered by {sorted(ALLOWED_ORDERING[route])}"
        )
    return {"ordering": order_by if ascending else f"-{order_by}"}


def make_batches(tasks: Sequence[schemas.TaskSpec], auto_batching: bool, batch_size: int) -> list[list]:
    """Split parents-first ordered tasks into ``bulk_create`` batches."""
    if not auto_batching:
        return [list(tasks)] if tasks else []
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise exc.SpecValidationError.for_field("batch_size", batch_size, "must be a positive integer")
    return [list(tasks[i : i + batch_size]) for i in range(0, len(tasks), batch_size)]


def implicit_plan_key(task_key: str) -> str:
    """Key of the plan add_task creates for a task without plan: derived from the task key, so
    a rerun finds the same plan instead of creating another."""
    return str(uuid.uuid5(IMPLICIT_PLAN_NAMESPACE, task_key))


@dataclass(frozen=True)
class PlanSubmission:
    """What :meth:`SubstraClient.submit_compute_plan` did: the plan, whether this call created it
    (False: found from an earlier attempt), and which tasks it registered or found already there."""

    plan: models.ComputePlan
    created: bool
    added_task_keys: list[str] = field(default_factory=list)
    existing_task_keys: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class SubstraClient:
    """Client of one Substra organization (the SDK's ``Client`` in remote mode).

    Settings come from code, then ``SUBSTRA_<CLIENT_NAME>_<ATTR>`` environment variables, then
    the ``client_name`` section of the YAML ``configuration_file``. Defaults:
    ``insecure=False``, ``retry_timeout=300`` (seconds of retrying per call),
    ``connect_timeout=10``, ``read_timeout=120``, ``max_attempts=6``, ``backoff=1``,
    ``backoff_max=30``, ``page_size=1000``, ``max_json_bytes=256 MiB`` (largest JSON or text
    body loaded in memory; larger answers raise InvalidResponse). With ``username``/``password`` and no token, the
    client logs in at once and logs out on ``close()`` / leaving a ``with`` block; it also
    logs in again (once) when the server answers 401.
    """

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
        logger.info("substra client for %s (url from %s)", settings.url, origins["url"])
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

    def __enter__(self) -> SubstraClient:
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
        """Get a token with username/password (``POST /api-token-auth/``, never retried)."""
        exc.register_secret(password)
        url = self._transport.url("api-token-auth")
        try:
            body = self._transport.request_json(
                "POST",
                url,
                data={"username": username, "password": password},
                safety=Safety.NEVER,
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
        body = self._transport.request_json("GET", self._transport.url("info"))
        return models.OrganizationInfo.model_validate(body)

    def list_organization(self, *args: Any, **kwargs: Any) -> list[models.Organization]:
        """``GET /organization/`` (a plain list, not paginated)."""
        body = self._transport.request_json("GET", self._transport.url("organization"))
        items = body.get("results", []) if isinstance(body, dict) else body or []
        return [models.Organization.model_validate(item) for item in items]

    # -- datasets and data samples ---------------------------------------------------------

    def add_dataset(self, data: Union[dict, schemas.DatasetSpec]) -> str:
        """Register a dataset (opener + description); return its key (server-chosen)."""
        spec = build_spec(schemas.DatasetSpec, data)
        with contextlib.ExitStack() as stack:
            opener = stack.enter_context(spec.data_opener.open("rb"))
            files: dict[str, Any] = {"data_opener": (spec.data_opener.name, opener, "text/x-python")}
            if spec.description is not None:
                desc = stack.enter_context(spec.description.open("rb"))
                files["description"] = (spec.description.name, desc, "text/markdown")
            else:
                files["description"] = ("description.md", io.BytesIO(GENERATED_DESCRIPTION), "text/markdown")
            body = self._transport.request_json(
                "POST",
                self._transport.url("data_manager"),
                data={"json": json.dumps(spec.to_wire())},
                files=files,
                safety=Safety.CONNECT_ONLY,
                creates=f"dataset {spec.name!r}",
            )
        return _key_of(body, "POST /data_manager/")

    def add_data_sample(self, data: Union[dict, schemas.DataSampleSpec], local: bool = True) -> str:
        """Register one sample folder (``path``); return its key."""
        spec = build_spec(schemas.DataSampleSpec, data)
        if spec.paths:
            raise exc.SpecValidationError.for_field("paths", spec.paths, "use add_data_samples for several folders")
        return self._add_samples(spec, local)[0]

    def add_data_samples(self, data: Union[dict, schemas.DataSampleSpec], local: bool = True) -> list[str]:
        """Register several sample folders (``paths``) in one request; return their keys.

        The server does not promise to return keys in the order of ``paths``.
        """
        spec = build_spec(schemas.DataSampleSpec, data)
        if spec.path is not None:
            raise exc.SpecValidationError.for_field("path", spec.path, "use add_data_sample for one folder")
        return self._add_samples(spec, local)

    def _add_samples(self, spec: schemas.DataSampleSpec, local: bool) -> list[str]:
        """Upload zipped folders (local=True) or send server-side paths (local=False)."""
        folders = spec.folders()
        field = "paths" if spec.is_many() else "path"
        what = f"data sample(s) for dataset(s) {spec.data_manager_keys}"
        if local:
            files: dict[str, Any] = {}
            for i, folder in enumerate(folders):
                where = f"{field}.{i}" if spec.is_many() else field
                if not folder.is_dir():
                    raise exc.LoadDataException.for_field(where, str(folder), "is not an existing directory")
                part = "path" if not spec.is_many() else _unique_part_name(folder.name or "sample", files)
                files[part] = (f"{part}.zip", zip_folder(folder, bool(spec.followlinks), where), "application/zip")
            body = self._transport.request_json(
                "POST",
                self._transport.url("data_sample"),
                data={"json": json.dumps({"data_manager_keys": spec.data_manager_keys})},
                files=files,
                safety=Safety.CONNECT_ONLY,
                creates=what,
            )
        else:
            payload: dict[str, Any] = {"data_manager_keys": spec.data_manager_keys}
            resolved = [str(pathlib.Path(f).resolve()) for f in folders]
            if spec.is_many():
                payload["paths"] = resolved
            else:
                payload["path"] = resolved[0]
            body = self._transport.request_json(
                "POST",
                self._transport.url("data_sample"),
                json_body=payload,
                safety=Safety.CONNECT_ONLY,
                creates=what,
            )
        items = body if isinstance(body, list) else [body]
        keys = [_key_of(item, "POST /data_sample/") for item in items]
        if len(keys) != len(folders):
            logger.warning("sent %d sample folder(s) but the server returned %d key(s)", len(folders), len(keys))
        return keys

    def link_dataset_with_data_samples(self, dataset_key: str, data_sample_keys: list[str]) -> list[str]:
        """Attach samples to a dataset (links only ever merge, so this is safe to repeat)."""
        dataset_key = check_key(dataset_key, "dataset_key")
        keys = [check_key(k, f"data_sample_keys.{i}") for i, k in enumerate(data_sample_keys)]
        if not keys:
            raise exc.SpecValidationError.for_field("data_sample_keys", data_sample_keys, "must not be empty")
        self._transport.request_json(
            "POST",
            self._transport.url("data_sample", "bulk_update"),
            data={"data_manager_keys": [dataset_key], "data_sample_keys": keys},
            safety=Safety.SAFE,
            key=dataset_key,
        )
        return keys

    def update_dataset(self, key: str, name: str) -> None:
        """Rename a dataset (applied asynchronously by the server)."""
        self._update("data_manager", key, build_spec(schemas.UpdateDatasetSpec, {"name": name}))

    # -- functions ---------------------------------------------------------------------------

    def add_function(self, data: Union[dict, schemas.FunctionSpec]) -> str:
        """Register a function (archive with a Dockerfile + description); return its key."""
        spec = build_spec(schemas.FunctionSpec, data)
        if not (zipfile.is_zipfile(spec.file) or _is_tarfile(spec.file)):
            raise exc.LoadDataException.for_field("file", str(spec.file), "is neither a zip nor a tar archive")
        with spec.file.open("rb") as archive, spec.description.open("rb") as desc:
            body = self._transport.request_json(
                "POST",
                self._transport.url("function"),
                data={"json": json.dumps(spec.to_wire())},
                files={
                    "file": (spec.file.name, archive, "application/octet-stream"),
                    "description": (spec.description.name, desc, "text/markdown"),
                },
                safety=Safety.CONNECT_ONLY,
                creates=f"function {spec.name!r}",
            )
        return _key_of(body, "POST /function/")

    def update_function(self, key: str, name: str) -> None:
        """Rename a function."""
        self._update("function", key, build_spec(schemas.UpdateFunctionSpec, {"name": name}))

    # -- compute plans and tasks -------------------------------------------------------------

    def add_compute_plan(
        self,
        data: Union[dict, schemas.ComputePlanSpec],
        auto_batching: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> models.ComputePlan:
        """Create a plan, then its tasks in parents-first batches; safe to call again.

        The plan key is the client's (``data["key"]`` or a new uuid4): if the plan already
        exists it is reused, and batches already applied are skipped.
        """
        return self.submit_compute_plan(data, auto_batching, batch_size).plan

    def submit_compute_plan(
        self,
        data: Union[dict, schemas.ComputePlanSpec],
        auto_batching: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> PlanSubmission:
        """:meth:`add_compute_plan`, also telling what was created now and what already existed.

        "Existing" means answered 409 and confirmed present, which includes a retry of this
        very call whose first answer was lost.
        """
        spec = build_spec(schemas.ComputePlanSpec, data)
        tasks = spec.task_specs()
        batches = make_batches(tasks, auto_batching, batch_size)
        plan, created = self._create_plan(spec)
        added: list[str] = []
        existing: list[str] = []
        if batches:
            added, existing = self._submit_batches(spec.key, batches)
            plan = self.get_compute_plan(spec.key)
        return PlanSubmission(plan=plan, created=created, added_task_keys=added, existing_task_keys=existing)

    def add_compute_plan_tasks(
        self,
        key: str,
        tasks: Union[dict, list, schemas.UpdateComputePlanTasksSpec],
        auto_batching: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> models.ComputePlan:
        """Add tasks to an existing plan (parents first, in batches); return the updated plan."""
        key = check_key(key, "key")
        if isinstance(tasks, list):
            tasks = {"key": key, "tasks": tasks}
        elif isinstance(tasks, Mapping):
            tasks = {**tasks, "key": key}
        spec = build_spec(schemas.UpdateComputePlanTasksSpec, tasks)
        if spec.key != key:
            raise exc.SpecValidationError.for_field("tasks.key", spec.key, f"differs from the plan key {key}")
        batches = make_batches(spec.task_specs(), auto_batching, batch_size)
        self._submit_batches(key, batches)
        return self.get_compute_plan(key)

    def add_task(self, data: Union[dict, schemas.TaskSpec]) -> str:
        """Create one task; return its key.

        With ``compute_plan_key`` the task joins that plan. Without, a plan named after the task
        is created first, with a key derived from the task key (so a rerun reuses it).
        """
        spec = build_spec(schemas.TaskSpec, data)
        if spec.compute_plan_key is None:
            plan_spec = schemas.ComputePlanSpec(key=implicit_plan_key(spec.key), name=spec.key)
            self._create_plan(plan_spec)
            spec = spec.model_copy(update={"compute_plan_key": plan_spec.key})
        self._submit_batches(spec.compute_plan_key, [[spec]])  # type: ignore[arg-type]
        return spec.key

    def update_compute_plan(self, key: str, name: str) -> None:
        """Rename a compute plan."""
        self._update("compute_plan", key, build_spec(schemas.UpdateComputePlanSpec, {"name": name}))

    def cancel_compute_plan(self, key: str) -> None:
        """Cancel a plan. Idempotent: a plan already canceled counts as success.

        The server answers 500 to a second cancel, so an ambiguous failure (timeout, 5xx) is
        resolved by reading the plan's status rather than by blindly resending.
        """
        key = check_key(key, "key")
        url = self._transport.url("compute_plan", key, "cancel")
        resent = False
        while True:
            try:
                self._transport.request_json("POST", url, safety=Safety.CONNECT_ONLY, key=key)
                return
            except exc.SubstraError as error:
                if not (is_ambiguous(error) or isinstance(error, exc.InternalServerError)):
                    raise
                status = self._settle_cancel(key)
                if status == models.ComputePlanStatus.canceled.value:
                    logger.info("compute plan %s is canceled (after %s)", key, type(error).__name__)
                    return
                finished = status in (models.ComputePlanStatus.done.value, models.ComputePlanStatus.failed.value)
                if finished or resent or isinstance(error, exc.InternalServerError):
                    error.msg = f"{error.msg} (plan status: {status})"
                    error.args = (error.msg,)
                    raise error from None
                logger.warning("cancel of compute plan %s not confirmed (%s); sending it again", key, error)
                resent = True

    def _settle_cancel(self, key: str, attempts: int = 3, pause: float = 1.0) -> str:
        """Read the plan status a few times: cancellation reaches the database asynchronously."""
        status = ""
        for i in range(attempts):
            status = waiting.status_of(self.get_compute_plan(key))
            if status in {s.value for s in models.ComputePlanStatus} - {
                models.ComputePlanStatus.doing.value,
                models.ComputePlanStatus.created.value,
            }:
                return status
            if i + 1 < attempts:
                self._sleep(pause)
        return status

    def _create_plan(self, spec: schemas.ComputePlanSpec) -> tuple[models.ComputePlan, bool]:
        """POST the plan; a 409 on our own key means it exists already: fetch it.

        Returns the plan and whether this call created it.
        """
        try:
            body = self._transport.request_json(
                "POST",
                self._transport.url("compute_plan"),
                json_body=spec.to_wire(),
                safety=Safety.SAFE,
                key=spec.key,
            )
            return _parse(models.ComputePlan, body, "POST /compute_plan/"), True
        except exc.AlreadyExists:
            plan = self.get_compute_plan(spec.key)
            if plan.name != spec.name:
                logger.warning(
                    "compute plan %s already exists under another name (%r, not %r); reusing it",
                    spec.key,
                    plan.name,
                    spec.name,
                )
            else:
                logger.info("compute plan %s already exists; reusing it", spec.key)
            return plan, False

    def _submit_batches(self, plan_key: str, batches: Iterable[list[schemas.TaskSpec]]) -> tuple[list[str], list[str]]:
        """POST each batch to bulk_create; a 409 is checked to mean "already applied".

        Returns the task keys created now and those found already registered.
        """
        url = self._transport.url("task", "bulk_create")
        added: list[str] = []
        existing: list[str] = []
        for n, batch in enumerate(batches, start=1):
            wire = [{**t.to_wire(), "compute_plan_key": plan_key} for t in batch]
            keys = [t["key"] for t in wire]
            try:
                # all-or-nothing: a 200 means every task of the batch was registered
                self._transport.request_ok("POST", url, json_body={"tasks": wire}, safety=Safety.SAFE, key=plan_key)
                added.extend(keys)
                logger.debug("compute plan %s: batch %d (%d tasks) created", plan_key, n, len(batch))
            except exc.AlreadyExists as error:
                self._confirm_batch(plan_key, keys, error)
                existing.extend(keys)
                logger.info("compute plan %s: batch %d (%d tasks) was already created", plan_key, n, len(batch))
        return added, existing

    def _confirm_batch(self, plan_key: str, keys: list[str], error: exc.AlreadyExists) -> None:
        """After a 409, check that every task of the batch is in the plan (batches are
        all-or-nothing); otherwise the keys collide with other tasks: re-raise, explained."""
        found: set[str] = set()
        for i in range(0, len(keys), _CONFIRM_CHUNK):
            chunk = keys[i : i + _CONFIRM_CHUNK]
            items = self._transport.list_all(
                self._transport.url("task"),
                params={"compute_plan_key": plan_key, "key": ",".join(chunk), "page_size": len(chunk)},
            )
            found.update(item.get("key") for item in items if isinstance(item, dict))
        missing = [k for k in keys if k not in found]
        if missing:
            raise exc.AlreadyExists(
                f"{error}; {len(missing)} of the {len(keys)} task keys of this batch are not in compute plan "
                f"{plan_key} (e.g. {missing[:3]}): they collide with existing tasks, or the batch differs "
                "from the one first submitted",
                status_code=error.status_code,
                key=missing,
                method=error.method,
                url=error.url,
                detail=error.detail,
                errors=error.errors,
            ) from None

    # -- getters -------------------------------------------------------------------------------

    def get_dataset(self, key: str) -> models.Dataset:
        """``GET /data_manager/{key}/``."""
        return self._get("data_manager", key, models.Dataset)

    def get_data_sample(self, key: str) -> models.DataSample:
        """``GET /data_sample/{key}/``."""
        return self._get("data_sample", key, models.DataSample)

    def get_function(self, key: str) -> models.Function:
        """``GET /function/{key}/``."""
        return self._get("function", key, models.Function)

    def get_compute_plan(self, key: str) -> models.ComputePlan:
        """``GET /compute_plan/{key}/``."""
        return self._get("compute_plan", key, models.ComputePlan)

    def get_task(self, key: str) -> models.Task:
        """``GET /task/{key}/``."""
        return self._get("task", key, models.Task)

    def get_model(self, key: str) -> models.Model:
        """``GET /model/{key}/``."""
        return self._get("model", key, models.Model)

    def _get(self, route: str, key: str, model: type[ModelT]) -> ModelT:
        """GET one asset by key and parse it."""
        key = check_key(key, "key")
        body = self._transport.request_json("GET", self._transport.url(route, key), key=key)
        return _parse(model, body, f"GET /{route}/{key}/")

    # -- lists ----------------------------------------------------------------------------------

    def list_dataset(
        self,
        filters: dict | None = None,
        ascending: bool = False,
        *,
        order_by: str | None = "creation_date",
        page_size: int | None = None,
    ) -> list[models.Dataset]:
        """List datasets (filters: key, name, owner, data_sample_key)."""
        return self._list("data_manager", models.Dataset, filters, order_by, ascending, page_size)

    def list_data_sample(
        self,
        filters: dict | None = None,
        ascending: bool = False,
        *,
        order_by: str | None = "creation_date",
        page_size: int | None = None,
    ) -> list[models.DataSample]:
        """List data samples (filters: key, owner, dataset_key)."""
        return self._list("data_sample", models.DataSample, filters, order_by, ascending, page_size)

    def list_function(
        self,
        filters: dict | None = None,
        ascending: bool = False,
        *,
        order_by: str | None = "creation_date",
        page_size: int | None = None,
    ) -> list[models.Function]:
        """List functions (filters: key, name, owner, compute_plan_key)."""
        return self._list("function", models.Function, filters, order_by, ascending, page_size)

    def list_compute_plan(
        self,
        filters: dict | None = None,
        order_by: str | None = "creation_date",
        ascending: bool = False,
        *,
        page_size: int | None = None,
    ) -> list[models.ComputePlan]:
        """List compute plans (filters: key, name, owner, tag, status, function_key, creator, metadata)."""
        return self._list("compute_plan", models.ComputePlan, filters, order_by, ascending, page_size)

    def list_task(
        self,
        filters: dict | None = None,
        order_by: str | None = "creation_date",
        ascending: bool = False,
        *,
        page_size: int | None = None,
    ) -> list[models.Task]:
        """List tasks (filters: key, owner, worker, rank, tag, status, compute_plan_key,
        function_key, metadata)."""
        return self._list("task", models.Task, filters, order_by, ascending, page_size)

    def list_model(
        self,
        filters: dict | None = None,
        ascending: bool = False,
        *,
        order_by: str | None = "creation_date",
        page_size: int | None = None,
    ) -> list[models.Model]:
        """List models (filters: key, owner, compute_task_key)."""
        return self._list("model", models.Model, filters, order_by, ascending, page_size)

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
        items = self._transport.list_all(self._transport.url(route), params=params)
        return [_parse(model, item, f"GET /{route}/") for item in items]

    def _page_size(self, page_size: int | None) -> int:
        """Validated page size (1..10000), defaulting to the client setting."""
        size = self.settings.page_size if page_size is None else page_size
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 10000:
            raise exc.SpecValidationError.for_field("page_size", page_size, "must be an integer in 1..10000")
        return size

    # -- task assets ----------------------------------------------------------------------------

    def list_task_input_assets(self, key: str) -> list[models.InputAsset]:
        """Inputs of a task (datasets, samples, models)."""
        key = check_key(key, "key")
        items = self._transport.list_all(
            self._transport.url("task", key, "input_assets"), params={"page_size": str(self._page_size(None))}
        )
        return [_parse(models.InputAsset, item, f"GET /task/{key}/input_assets/") for item in items]

    def list_task_output_assets(self, key: str, *, wait_completion: bool = False) -> list[models.OutputAsset]:
        """Outputs of a task (models; performances as floats)."""
        key = check_key(key, "key")
        if wait_completion:
            self.wait_task(key)
        return self._output_assets(key, None)

    def get_task_output_asset(self, key: str, identifier: str, *, wait_completion: bool = False) -> models.OutputAsset:
        """The one output of a task with this identifier."""
        key = check_key(key, "key")
        if wait_completion:
            self.wait_task(key)
        outputs = self._output_assets(key, identifier)
        if not outputs:
            raise exc.TaskAssetNotFoundError(key, identifier)
        if len(outputs) > 1:
            raise exc.TaskAssetMultipleFoundError(key, identifier)
        return outputs[0]

    def _output_assets(self, key: str, identifier: str | None) -> list[models.OutputAsset]:
        """GET the output assets, filtered by identifier (also client-side: bad values are ignored
        by the server)."""
        params = {"page_size": str(self._page_size(None))}
        if identifier is not None:
            params["identifier"] = identifier
        items = self._transport.list_all(self._transport.url("task", key, "output_assets"), params=params)
        outputs = [_parse(models.OutputAsset, item, f"GET /task/{key}/output_assets/") for item in items]
        if identifier is not None:
            outputs = [o for o in outputs if o.identifier == identifier]
        return outputs

    # -- performances ---------------------------------------------------------------------------

    def get_performances(self, key: str, *, wait_completion: bool = False) -> models.Performances:
        """All performances of a plan, column-oriented (``.rows()`` for row dicts)."""
        key = check_key(key, "key")
        if wait_completion:
            self.wait_compute_plan(key)
        plan = self.get_compute_plan(key)
        body = self._transport.request_json("GET", self._transport.url("compute_plan", key, "perf"), key=key)
        results = body.get("results") if isinstance(body, dict) else body
        if not isinstance(results, list):
            raise exc.InvalidResponse(f"GET /compute_plan/{key}/perf/: no 'results' list", key=key)
        return models.Performances.from_server(plan, results)

    # -- files -----------------------------------------------------------------------------------

    def download_dataset(self, key: str, destination_folder: str | os.PathLike[str]) -> pathlib.Path:
        """Save the dataset's opener as ``opener.py`` in the folder."""
        dataset = self.get_dataset(key)
        return self._download(dataset.opener.storage_address, destination_folder, "opener.py")

    def download_function(self, key: str, destination_folder: str | os.PathLike[str]) -> pathlib.Path:
        """Save the function's archive as ``function.tar.gz`` in the folder."""
        function = self.get_function(key)
        return self._download(function.archive.storage_address, destination_folder, "function.tar.gz")

    def download_model(self, key: str, destination_folder: str | os.PathLike[str]) -> pathlib.Path:
        """Save a model as ``model_<key>`` in the folder."""
        key = check_key(key, "key")
        return self._download(self._transport.url("model", key, "file"), destination_folder, f"model_{key}")

    def download_model_from_task(self, task_key: str, identifier: str, folder: str | os.PathLike[str]) -> pathlib.Path:
        """Save the model a task produced under ``identifier``."""
        output = self.get_task_output_asset(task_key, identifier)
        if not isinstance(output.asset, models.Model):
            raise exc.SpecValidationError.for_field(
                "identifier", identifier, f"output of task {task_key} is a {output.kind}, not a model"
            )
        return self.download_model(output.asset.key, folder)

    def download_logs(self, task_key: str, folder: str | os.PathLike[str]) -> str:
        """Save a failed task's logs as ``task_logs_<key>.txt``; return the file path."""
        task_key = check_key(task_key, "task_key")
        url = self._transport.url("task", task_key, "logs")
        return str(self._download(url, folder, f"task_logs_{task_key}.txt"))

    def get_logs(self, task_key: str) -> str:
        """A failed task's logs as text (410 when the task has none)."""
        task_key = check_key(task_key, "task_key")
        return self._transport.request_text("GET", self._transport.url("task", task_key, "logs"), key=task_key)

    def describe_dataset(self, key: str) -> str:
        """The dataset's Markdown description."""
        dataset = self.get_dataset(key)
        return self._transport.request_text("GET", self._transport.rebase(dataset.description.storage_address))

    def describe_function(self, key: str) -> str:
        """The function's Markdown description."""
        function = self.get_function(key)
        return self._transport.request_text("GET", self._transport.rebase(function.description.storage_address))

    def _download(self, url: str, folder: str | os.PathLike[str], name: str) -> pathlib.Path:
        """Stream ``url`` into ``folder/name``, refusing names that leave the folder."""
        if not url:
            raise exc.InvalidResponse("the asset has no download address (file deleted or not exported)")
        target = safe_join(pathlib.Path(folder), name)
        return self._transport.download(self._transport.rebase(url), target)

    # -- updates ---------------------------------------------------------------------------------

    def _update(self, route: str, key: str, spec: pydantic.BaseModel) -> None:
        """PUT a name change (idempotent, retried)."""
        key = check_key(key, "key")
        self._transport.request_json(
            "PUT", self._transport.url(route, key), json_body=spec.model_dump(), safety=Safety.SAFE, key=key
        )

    # -- waiting -----------------------------------------------------------------------------------

    def wait_task(
        self, key: str, *, timeout: float | None = None, polling_period: float = 2.0, raise_on_failure: bool = True
    ) -> models.Task:
        """Block until the task is done, canceled, or failed (with its failure report)."""
        return self._wait(waiting.WaitKind.task, key, timeout, polling_period, raise_on_failure)

    def wait_compute_plan(
        self, key: str, *, timeout: float | None = None, polling_period: float = 2.0, raise_on_failure: bool = True
    ) -> models.ComputePlan:
        """Block until the plan is done, failed or canceled."""
        return self._wait(waiting.WaitKind.compute_plan, key, timeout, polling_period, raise_on_failure)

    def wait_function(
        self, key: str, *, timeout: float | None = None, polling_period: float = 1.0, raise_on_failure: bool = True
    ) -> models.Function:
        """Block until the function is built (ready), failed or canceled."""
        return self._wait(waiting.WaitKind.function, key, timeout, polling_period, raise_on_failure)

    async def async_wait_task(
        self, key: str, *, timeout: float | None = None, polling_period: float = 2.0, raise_on_failure: bool = True
    ) -> models.Task:
        """Awaitable :meth:`wait_task` (HTTP in a worker thread, sleeps on the loop)."""
        return await self._async_wait(waiting.WaitKind.task, key, timeout, polling_period, raise_on_failure)

    async def async_wait_compute_plan(
        self, key: str, *, timeout: float | None = None, polling_period: float = 2.0, raise_on_failure: bool = True
    ) -> models.ComputePlan:
        """Awaitable :meth:`wait_compute_plan`."""
        return await self._async_wait(waiting.WaitKind.compute_plan, key, timeout, polling_period, raise_on_failure)

    async def async_wait_function(
        self, key: str, *, timeout: float | None = None, polling_period: float = 1.0, raise_on_failure: bool = True
    ) -> models.Function:
        """Awaitable :meth:`wait_function`."""
        return await self._async_wait(waiting.WaitKind.function, key, timeout, polling_period, raise_on_failure)

    async def async_get_task(self, key: str) -> models.Task:
        """Awaitable :meth:`get_task`."""
        return await asyncio.to_thread(self.get_task, key)

    async def async_get_compute_plan(self, key: str) -> models.ComputePlan:
        """Awaitable :meth:`get_compute_plan`."""
        return await asyncio.to_thread(self.get_compute_plan, key)

    async def async_get_function(self, key: str) -> models.Function:
        """Awaitable :meth:`get_function`."""
        return await asyncio.to_thread(self.get_function, key)

    async def async_cancel_compute_plan(self, key: str) -> None:
        """Awaitable :meth:`cancel_compute_plan`."""
        await asyncio.to_thread(self.cancel_compute_plan, key)

    def _fetch(self, kind: waiting.WaitKind, key: str) -> Any:
        """Getter for a wait target."""
        getters = {
            waiting.WaitKind.task: self.get_task,
            waiting.WaitKind.compute_plan: self.get_compute_plan,
            waiting.WaitKind.function: self.get_function,
        }
        return getters[kind](key)

    def log_tail(self, task_key: str, max_lines: int = LOG_TAIL_LINES) -> str | None:
        """Last lines of a task's logs, or None when unavailable (403, 404, 410 or any error)."""
        try:
            return self._transport.tail_text(self._transport.url("task", task_key, "logs"), max_lines)
        except (exc.AuthorizationError, exc.NotFound) as error:
            logger.debug("no logs for task %s: %s", task_key, error)
        except exc.HTTPError as error:
            if error.status_code != 410:
                logger.warning("could not fetch the logs of task %s: %s", task_key, error)
        except exc.SubstraError as error:
            logger.warning("could not fetch the logs of task %s: %s", task_key, error)
        return None

    def _machine(
        self, kind: waiting.WaitKind, key: str, timeout: float | None, polling_period: float, raise_on_failure: bool
    ) -> waiting.WaitMachine:
        """The shared wait state machine for ``key``."""
        key = check_key(key, "key")
        return waiting.wait_machine(
            kind,
            key,
            timeout=timeout,
            polling_period=polling_period,
            raise_on_failure=raise_on_failure,
            clock=self._clock,
        )

    def _wait(
        self, kind: waiting.WaitKind, key: str, timeout: float | None, polling_period: float, raise_on_failure: bool
    ) -> Any:
        """Sync driver of the wait machine."""
        machine = self._machine(kind, key, timeout, polling_period, raise_on_failure)
        return waiting.run_sync(machine, fetch=self._fetch, fetch_logs=self.log_tail, sleep=self._sleep)

    async def _async_wait(
        self, kind: waiting.WaitKind, key: str, timeout: float | None, polling_period: float, raise_on_failure: bool
    ) -> Any:
        """Async driver of the wait machine: HTTP in threads, sleeps on the event loop."""
        machine = self._machine(kind, key, timeout, polling_period, raise_on_failure)

        async def fetch(k: waiting.WaitKind, asset_key: str) -> Any:
            return await asyncio.to_thread(self._fetch, k, asset_key)

        async def fetch_logs(task_key: str, lines: int) -> str | None:
            return await asyncio.to_thread(self.log_tail, task_key, lines)

        return await waiting.run_async(machine, fetch=fetch, fetch_logs=fetch_logs, sleep=self._async_sleep)


Client = SubstraClient


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def zip_folder(folder: pathlib.Path, followlinks: bool = False, field: str = "path") -> io.BytesIO:
    """Zip a sample folder in memory (paths relative to it, sorted for reproducible archives)."""
    buffer = io.BytesIO()
    count = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for root, dirs, files in os.walk(folder, followlinks=followlinks):
            dirs.sort()
            for name in sorted(files):
                full = pathlib.Path(root) / name
                archive.write(full, arcname=full.relative_to(folder).as_posix())
                count += 1
    if count == 0:
        raise exc.LoadDataException.for_field(field, str(folder), "holds no file (the server refuses empty samples)")
    buffer.seek(0)
    return buffer


def _unique_part_name(name: str, taken: Mapping[str, Any]) -> str:
    """Multipart part name for a folder; folders sharing a base name get a suffix (the SDK
    silently dropped all but one)."""
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


def _is_tarfile(path: pathlib.Path) -> bool:
    """tarfile.is_tarfile without raising on unreadable files."""
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _key_of(body: Any, where: str) -> str:
    """The ``key`` of a creation answer (the only field worth trusting there)."""
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if isinstance(body, dict) and isinstance(body.get("key"), str):
        return body["key"]
    raise exc.InvalidResponse(f"{where}: the answer has no 'key'")


def _parse(model: type[ModelT], body: Any, where: str) -> ModelT:
    """Validate a server object, turning a mismatch into InvalidResponse."""
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in error.errors(include_url=False)[:5]
        )
        raise exc.InvalidResponse(f"{where}: unexpected {model.__name__} shape: {problems}") from None
