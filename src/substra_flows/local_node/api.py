"""The REST API of the local node: substra-backend 1.0's routes, bodies, status codes and errors.

One Starlette app serves every organization under its own prefix (``/org-1/``, ``/org-2/``...).
Handlers validate, then mutate the shared :class:`Store` under its lock; task execution is the
scheduler's business (``node.py``), woken through ``on_tasks_ready``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import json
import secrets
import shutil
import tarfile
import uuid
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, Router

from . import listing, orchestration, permissions
from .listing import Predicate
from .replication import Replica
from .sizes import MAX_MESSAGE_BYTES, message_too_large
from .store import (
    FUNCTION_WAITING,
    PLAN_CANCELED,
    PLAN_DONE,
    PLAN_FAILED,
    TASK_STATUSES,
    TASK_WAITING_PARENTS,
    Store,
    Token,
    is_uuid,
    now,
    parse_time,
    public_view,
)
from .throttle import LoginThrottle, Throttled

JSON_MEDIA = "application/json"
MAX_METADATA_LEN = 100
NOT_COMPUTED = "(not computed)"
# Django's production 404 page for a URL no route matches (A2 of the audit).
_DJANGO_404 = (
    '<!doctype html>\n<html lang="en">\n<head>\n  <title>Not Found</title>\n</head>\n<body>\n'
    "  <h1>Not Found</h1><p>The requested resource was not found on this server.</p>\n</body>\n</html>\n"
)


@dataclass
class OrganizationContext:
    """One organization served by the node: identity, user, and its URL prefix."""

    index: int
    organization_id: str
    name: str
    username: str
    password: str

    @property
    def prefix(self) -> str:
        """URL path prefix of this organization, e.g. ``/org-1``."""
        return f"/{self.name}"


class ApiError(Exception):
    """Raised by handlers; turned into the server's JSON error body."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body


def detail(status: int, message: Any) -> ApiError:
    """An error with the common ``{"detail": ...}`` body."""
    return ApiError(status, {"detail": message})


class ServerCrash(Exception):
    """An error the real server does not catch: answered 500 with a non-JSON body."""


def _json_response(request: Request, body: Any, status: int = 200) -> Response:
    accept = request.headers.get("accept", "")
    media = JSON_MEDIA
    for part in accept.split(","):
        if part.strip().startswith(JSON_MEDIA) and "version=" in part:
            media = part.strip().replace(" ", "")
            break
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type=media,
        headers={"Content-Disposition": 'attachment; filename="API-response.json"'},
    )


def _acceptable(request: Request) -> bool:
    accept = request.headers.get("accept")
    if not accept:
        return True
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in ("*/*", "application/*", JSON_MEDIA):
            return True
    return False


Handler = Callable[[Request, OrganizationContext, Token], Awaitable[Response]]


class NodeApi:
    """Builds the ASGI app; owns request validation and the store mutations they cause."""

    def __init__(
        self,
        store: Store,
        organizations: list[OrganizationContext],
        workdir: Path,
        servermedias_root: Path,
        on_tasks_ready: Callable[[], None],
        token_lifetime: dt.timedelta = dt.timedelta(hours=24),
        channel: str = "mychannel",
        *,
        model_export: bool = False,
        on_function_registered: Callable[[str], None] = lambda key: None,
        throttle: LoginThrottle | None = None,
        replica: Replica | None = None,
        max_message_bytes: int | None = MAX_MESSAGE_BYTES,
    ) -> None:
        self.store = store
        self.organizations = organizations
        self.org_ids = [o.organization_id for o in organizations]
        self.workdir = workdir
        self.servermedias_root = servermedias_root
        self.on_tasks_ready = on_tasks_ready
        self.token_lifetime = token_lifetime
        self.channel = channel
        self.model_export = model_export
        self.on_function_registered = on_function_registered
        self.throttle = throttle
        self.replica = replica or Replica(0.0)
        self.max_message_bytes = max_message_bytes
        self.terminated_cancel_delay = 5.0  # ORCHESTRATOR_RETRY_DELAY (1 s) x 5 retries before the 500

    # ---- app and plumbing -----------------------------------------------------------------------

    def build_app(self) -> Starlette:
        """One Mount per organization, each with the full route table."""
        mounts = [
            Mount(org.prefix, app=Router(self._routes(org), redirect_slashes=False)) for org in self.organizations
        ]
        app = Starlette(routes=mounts)
        app.router.redirect_slashes = False
        app.add_exception_handler(404, self._not_found)  # type: ignore[arg-type]
        return app

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        path = request.url.path
        if not path.endswith("/"):
            # Django's APPEND_SLASH with DEBUG=False (production): every method is redirected permanently,
            # so a POST comes back as a GET of the list (requests follows a 301 with GET).
            return RedirectResponse(str(request.url.replace(path=path + "/")), status_code=301)
        return HTMLResponse(_DJANGO_404, status_code=404)

    def _routes(self, org: OrganizationContext) -> list[Route]:
        def bind(handler: Handler, anonymous: bool = False, auth: bool = True) -> Callable[..., Any]:
            async def endpoint(request: Request) -> Response:
                return await self._dispatch(request, org, handler, anonymous=anonymous, auth=auth)

            return endpoint

        r = Route
        return [
            r("/api-token-auth/", bind(self.login, auth=False), methods=["POST"]),
            r("/active-api-tokens/", bind(self.active_tokens), methods=["GET", "DELETE"]),
            r("/api-token/", bind(self.create_token), methods=["POST"]),
            r("/info/", bind(self.info, anonymous=True), methods=["GET"]),
            r("/organization/", bind(self.list_organizations), methods=["GET"]),
            r("/data_manager/", bind(self.datasets_root), methods=["GET", "POST"]),
            r("/data_manager/{key}/", bind(self.dataset_item), methods=["GET", "PUT"]),
            r("/data_manager/{key}/opener/", bind(self.dataset_opener), methods=["GET"]),
            r("/data_manager/{key}/description/", bind(self.dataset_description), methods=["GET"]),
            r("/data_sample/", bind(self.samples_root), methods=["GET", "POST"]),
            r("/data_sample/bulk_update/", bind(self.link_samples), methods=["POST"]),
            r("/data_sample/{key}/", bind(self.sample_item), methods=["GET"]),
            r("/function/", bind(self.functions_root), methods=["GET", "POST"]),
            r("/function/{key}/", bind(self.function_item), methods=["GET", "PUT"]),
            r("/function/{key}/file/", bind(self.function_file), methods=["GET"]),
            r("/function/{key}/description/", bind(self.function_description), methods=["GET"]),
            r("/compute_plan/", bind(self.plans_root), methods=["GET", "POST"]),
            r("/compute_plan/{key}/", bind(self.plan_item), methods=["GET", "PUT"]),
            r("/compute_plan/{key}/cancel/", bind(self.cancel_plan), methods=["POST"]),
            r("/compute_plan/{key}/perf/", bind(self.plan_performances), methods=["GET"]),
            r("/task/", bind(self.list_tasks), methods=["GET"]),
            r("/task/bulk_create/", bind(self.bulk_create_tasks), methods=["POST"]),
            r("/task/{key}/", bind(self.get_task), methods=["GET"]),
            r("/task/{key}/input_assets/", bind(self.task_input_assets), methods=["GET"]),
            r("/task/{key}/output_assets/", bind(self.task_output_assets), methods=["GET"]),
            r("/task/{key}/logs/", bind(self.task_logs), methods=["GET"]),
            r("/task_profiling/", bind(self.list_profiling), methods=["GET"]),
            r("/task_profiling/{key}/", bind(self.get_profiling), methods=["GET"]),
            r("/model/", bind(self.list_models), methods=["GET"]),
            r("/model/{key}/", bind(self.get_model), methods=["GET"]),
            r("/model/{key}/file/", bind(self.model_file), methods=["GET"]),
        ]

    async def _dispatch(
        self, request: Request, org: OrganizationContext, handler: Handler, *, anonymous: bool, auth: bool
    ) -> Response:
        if not _acceptable(request):
            return _json_response(request, {"detail": "Could not satisfy the request Accept header."}, 406)
        try:
            token = self._authenticate(request, org) if auth else None
            if token is None and auth and not anonymous:
                raise ApiError(401, {"detail": "Authentication credentials were not provided."})
            if token is None and self.throttle is not None:  # DRF throttles only the calls it lets through
                self.throttle.check(org.name, request.client.host if request.client else "", login=not auth)
            return await handler(request, org, token)  # type: ignore[arg-type]
        except Throttled as throttled:
            response = _json_response(request, {"detail": throttled.detail}, 429)
            response.headers["Retry-After"] = str(throttled.wait)
            return response
        except ApiError as err:
            response = _json_response(request, err.body, err.status)
            if err.status == 401:
                response.headers["WWW-Authenticate"] = "Token"
            return response
        except ServerCrash as crash:
            return PlainTextResponse(f"Server Error (500)\n{crash}", status_code=500)

    def _authenticate(self, request: Request, org: OrganizationContext) -> Token | None:
        header = request.headers.get("authorization")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "token":
            return None  # Bearer and others count as anonymous
        token = self.store.tokens.get(value.strip())
        if token is None or token.organization_id != org.organization_id:
            raise ApiError(401, {"detail": "Invalid token."})
        if token.expires_at <= dt.datetime.now(dt.timezone.utc):
            raise ApiError(401, {"detail": "The token is expired"})
        return token

    def issue_token(self, org: OrganizationContext, *, implicit: bool, lifetime: dt.timedelta, note: str = "") -> Token:
        """Create and store a new token for the organization's user."""
        token = Token(
            id=str(uuid.uuid4()),
            token=secrets.token_hex(20),
            organization_id=org.organization_id,
            username=org.username,
            created_at=now(),
            expires_at=dt.datetime.now(dt.timezone.utc) + lifetime,
            implicit=implicit,
            note=note,
        )
        with self.store.lock:
            self.store.tokens[token.token] = token
        return token

    @staticmethod
    def _base(request: Request, org: OrganizationContext) -> str:
        return f"{request.url.scheme}://{request.url.netloc}{org.prefix}"

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        """JSON or form body as a dict (lists kept for repeated form fields)."""
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            raw = await request.body()
            if not raw:
                return {}
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise detail(400, f"JSON parse error - {exc}") from exc
            if not isinstance(body, dict):
                raise ApiError(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
            return body
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            out: dict[str, Any] = {}
            for key in form:
                values = form.getlist(key)
                out[key] = values if len(values) > 1 else values[0]
            return out
        return {}

    @staticmethod
    def _multipart_json(form: Any) -> dict[str, Any]:
        raw = form.get("json")
        if raw is None:
            return {}
        try:
            body = json.loads(raw if isinstance(raw, str) else raw.decode())
        except ValueError as exc:
            raise detail(400, f"JSON parse error - {exc}") from exc
        if not isinstance(body, dict):
            raise detail(400, "Invalid data. Expected a dictionary.")
        return body

    # ---- auth routes ----------------------------------------------------------------------------

    async def login(self, request: Request, org: OrganizationContext, _: Token | None) -> Response:
        form = await self._body(request)
        errors = {f: ["This field is required."] for f in ("username", "password") if not form.get(f)}
        if errors:
            raise ApiError(400, errors)
        if form["username"] != org.username or not secrets.compare_digest(str(form["password"]), org.password):
            raise ApiError(400, {"non_field_errors": ["Unable to log in with provided credentials."]})
        with self.store.lock:  # each login purges the user's expired implicit tokens
            moment = dt.datetime.now(dt.timezone.utc)
            for value in [
                t.token
                for t in self.store.tokens.values()
                if t.implicit and t.organization_id == org.organization_id and t.expires_at <= moment
            ]:
                del self.store.tokens[value]
        token = self.issue_token(org, implicit=True, lifetime=self.token_lifetime)
        return _json_response(
            request,
            {
                "id": token.id,
                "expires_at": token.public()["expires_at"],
                "created_at": token.created_at,
                "token": token.token,
            },
        )

    async def active_tokens(self, request: Request, org: OrganizationContext, token: Token) -> Response:
        mine = [t for t in self.store.tokens.values() if t.organization_id == org.organization_id]
        if request.method == "GET":
            return _json_response(
                request,
                {
                    "tokens": [t.public() for t in mine if not t.implicit],
                    "implicit_tokens": [t.public() for t in mine if t.implicit],
                },
            )
        token_id = request.query_params.get("id")
        with self.store.lock:
            for candidate in mine:
                if candidate.id == token_id:
                    del self.store.tokens[candidate.token]
                    return _json_response(request, {"detail": "Token removed"})
        raise detail(404, "Token not found")

    async def create_token(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        body = await self._body(request)
        lifetime = self.token_lifetime
        if body.get("expires_at"):
            try:
                expires = dt.datetime.fromisoformat(str(body["expires_at"]).replace("Z", "+00:00"))
            except ValueError as exc:
                raise ApiError(400, {"expires_at": ["Datetime has wrong format."]}) from exc
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=dt.timezone.utc)
            lifetime = expires - dt.datetime.now(dt.timezone.utc)
        token = self.issue_token(org, implicit=False, lifetime=lifetime, note=str(body.get("note", "")))
        return _json_response(request, {**token.public(), "token": token.token})

    # ---- organization ---------------------------------------------------------------------------

    async def info(self, request: Request, org: OrganizationContext, token: Token | None) -> Response:
        body: dict[str, Any] = {
            "host": self._base(request, org),
            "organization_id": org.organization_id,
            "organization_name": org.name,
            "config": {},
            "auth": {},
        }
        if token is not None:
            body.update(
                {
                    "channel": self.channel,
                    "version": "1.0.1-local-node",
                    "orchestrator_version": "1.0.0",
                    "config": {"model_export_enabled": self.model_export},
                    "user": org.username,
                    "user_role": "ADMIN",
                }
            )
        return _json_response(request, body)

    async def list_organizations(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        body = [
            {
                "id": other.organization_id,
                "address": "",
                "creation_date": "2024-01-01T00:00:00.000000Z",
                "is_current": other.organization_id == org.organization_id,
            }
            for other in sorted(self.organizations, key=lambda o: o.organization_id)
        ]
        return _json_response(request, body)

    # ---- shared validation ----------------------------------------------------------------------

    def _check_metadata(self, metadata: Any) -> dict[str, str]:
        if metadata is None:
            return {}
        if not isinstance(metadata, dict):
            raise ApiError(400, {"metadata": ["Expected a dictionary of items."]})
        for key, value in metadata.items():
            if "__" in key:
                raise detail(400, '"__" cannot be used in a metadata key, please use simple underscore instead')
            if len(key) > MAX_METADATA_LEN or len(str(value)) > MAX_METADATA_LEN:
                raise detail(400, f"metadata key and value must be at most 100 characters (key {key!r})")
        return {str(k): str(v) for k, v in metadata.items()}

    def _request_permissions(self, raw: Any, owner: str, field: str) -> dict[str, Any]:
        """Request shape ``{public, authorized_ids}`` -> stored flat permission, owner always listed."""
        try:
            return permissions.stored(raw, owner, self.org_ids, field)
        except ValueError as exc:
            raise detail(400, str(exc)) from exc

    _both = staticmethod(permissions.both)
    _allowed = staticmethod(permissions.allowed)

    def _store_upload(self, upload: UploadFile, kind: str, key: str, name: str) -> Path:
        folder = self.workdir / "files" / kind / key
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        upload.file.seek(0)
        with path.open("wb") as out:
            shutil.copyfileobj(upload.file, out)
        return path

    @staticmethod
    def _sha256(path: Path) -> str:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def _get(
        self, table: dict[str, dict[str, Any]], key: str, model: str, org: OrganizationContext | None = None
    ) -> dict[str, Any]:
        record = table.get(key)
        if record is None or (org is not None and not self.replica.visible(model, key, org.organization_id)):
            raise detail(404, f"No {model} matches the given query." if is_uuid(key) else "Not found.")
        return record

    def _seen(self, records: Any, model: str, org: OrganizationContext) -> list[dict[str, Any]]:
        """The records organization ``org`` has received (all of them without replication lag)."""
        if not self.replica.enabled:
            return list(records)
        return [r for r in records if self.replica.visible(model, r["key"], org.organization_id)]

    def _list(
        self,
        request: Request,
        records: list[dict[str, Any]],
        filters: dict[str, Predicate],
        ordering: tuple[str, ...],
        default_size: int = 100,
        view: Callable[[dict[str, Any]], dict[str, Any]] = public_view,
    ) -> Response:
        params = dict(request.query_params)  # repeated parameters: the last value wins
        chosen = listing.apply_filters(records, params, filters)
        chosen = listing.order(chosen, params.get("ordering"), ordering)
        try:
            page = listing.paginate(chosen, params, str(request.url), default_size)
        except listing.InvalidPage as exc:
            raise detail(404, "Invalid page.") from exc
        page["results"] = [view(r) for r in page["results"]]
        return _json_response(request, page)

    @staticmethod
    def _check_status_filter(request: Request, allowed: tuple[str, ...]) -> None:
        raw = request.query_params.get("status")
        if raw is None:
            return
        for value in listing.split_values(raw):
            if value not in allowed:
                raise ApiError(
                    400, {"status": [f"Select a valid choice. {value} is not one of the available choices."]}
                )

    # ---- datasets -------------------------------------------------------------------------------

    def _dataset_view(self, record: dict[str, Any], request: Request, org: OrganizationContext) -> dict[str, Any]:
        base = self._base(request, org)
        view = public_view(record)
        view["opener"] = {
            "checksum": record["_opener_checksum"],
            "storage_address": f"{base}/data_manager/{record['key']}/opener/",
        }
        view["description"] = {
            "checksum": record["_description_checksum"],
            "storage_address": f"{base}/data_manager/{record['key']}/description/",
        }
        return view

    async def datasets_root(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        if request.method == "GET":
            filters: dict[str, Predicate] = {
                "key": listing.in_list(lambda r: r["key"]),
                "name": listing.in_list(lambda r: r["name"]),
                "owner": listing.in_list(lambda r: r["owner"]),
                "data_sample_key": listing.contains_any(lambda r: r["data_sample_keys"]),
                "match": listing.match_text(("key", "name")),
                "can_process": listing.permission_allows(lambda r: r["permissions"]["process"]),
                "can_access_logs": listing.permission_allows(lambda r: r["logs_permission"]),
                **listing.date_filters("creation_date"),
            }
            with self.store.lock:
                records = self._seen(self.store.datasets.values(), "DataManager", org)
            return self._list(
                request,
                records,
                filters,
                ("creation_date", "key", "name", "owner"),
                view=lambda r: self._dataset_view(r, request, org),
            )
        form = await request.form()
        spec = self._multipart_json(form)
        opener, description = form.get("data_opener"), form.get("description")
        if not isinstance(opener, UploadFile):
            raise ApiError(400, {"detail": ["Can't get hash of file None: file is 'None'"], "key": NOT_COMPUTED})
        if not isinstance(description, UploadFile):
            raise ApiError(400, {"detail": [{"description": ["This field may not be null."]}], "key": NOT_COMPUTED})
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_METADATA_LEN:
            raise ApiError(
                400,
                {"detail": [{"name": [f"Invalid name {name!r}: 1 to 100 characters."]}], "key": NOT_COMPUTED},
            )
        metadata = self._check_metadata(spec.get("metadata"))
        permissions = self._request_permissions(spec.get("permissions"), org.organization_id, "permissions")
        logs_permission = self._request_permissions(spec.get("logs_permission"), org.organization_id, "logs_permission")
        key = str(uuid.uuid4())
        opener_path = self._store_upload(opener, "data_manager", key, "opener.py")
        description_path = self._store_upload(description, "data_manager", key, "description.md")
        record = {
            "key": key,
            "name": name,
            "owner": org.organization_id,
            "permissions": self._both(permissions),
            "logs_permission": logs_permission,
            "metadata": metadata,
            "creation_date": now(),
            "data_sample_keys": [],
            "_opener_path": str(opener_path),
            "_description_path": str(description_path),
            "_opener_checksum": self._sha256(opener_path),
            "_description_checksum": self._sha256(description_path),
            "_seq": 0,
        }
        with self.store.lock:
            record["_seq"] = self.store.next_sequence()
            self.store.datasets[key] = record
            self.replica.created("DataManager", key, org.organization_id)
        body = self._dataset_view(record, request, org)
        body.pop("data_sample_keys")
        body["description"] = str(description_path)  # the real create response overlays the file record
        body["data_opener"] = str(opener_path)
        body["checksum"] = record["_opener_checksum"]
        return _json_response(request, body, 201)

    async def dataset_item(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        key = request.path_params["key"]
        if request.method == "PUT":
            return await self._rename(request, org, self.store.datasets, key, "DataManager")
        with self.store.lock:
            record = self._get(self.store.datasets, key, "DataManager", org)
            return _json_response(request, self._dataset_view(record, request, org))

    async def _rename(
        self,
        request: Request,
        org: OrganizationContext,
        table: dict[str, dict[str, Any]],
        key: str,
        model: str,
    ) -> Response:
        body = await self._body(request)
        name = body.get("name")
        with self.store.lock:
            record = self._get(table, key, model)
            if record["owner"] != org.organization_id:
                raise detail(403, "You do not have permission to perform this action.")
            if not isinstance(name, str) or not name.strip() or len(name) > MAX_METADATA_LEN:
                raise ApiError(400, {"name": ["This field is required (1 to 100 characters)."]})
            record["name"] = name
        return _json_response(request, {})

    def _download(self, request: Request, path: str, filename: str) -> Response:
        return FileResponse(
            path,
            filename=filename,
            media_type="application/octet-stream",
            content_disposition_type="attachment",
        )

    async def dataset_opener(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        with self.store.lock:
            record = self._get(self.store.datasets, request.path_params["key"], "DataManager", org)
        if not self._allowed(record["permissions"]["process"], org.organization_id):
            raise detail(403, "You do not have permission to perform this action.")
        return self._download(request, record["_opener_path"], "opener.py")

    async def dataset_description(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        with self.store.lock:
            record = self._get(self.store.datasets, request.path_params["key"], "DataManager", org)
        if not self._allowed(record["permissions"]["process"], org.organization_id):
            raise detail(403, "You do not have permission to perform this action.")
        return self._download(request, record["_description_path"], "description.md")

    # ---- data samples ---------------------------------------------------------------------------

    async def samples_root(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        if request.method == "GET":
            filters: dict[str, Predicate] = {
                "key": listing.in_list(lambda r: r["key"]),
                "owner": listing.in_list(lambda r: r["owner"]),
                "dataset_key": lambda r, raw: raw in r["data_manager_keys"],
                **listing.date_filters("creation_date"),
            }
            with self.store.lock:
                records = self._seen(self.store.samples.values(), "DataSample", org)
            return self._list(
                request,
                records,
                filters,
                ("creation_date", "key", "owner"),
                view=lambda r: {k: r[k] for k in ("key", "owner", "data_manager_keys", "creation_date")},
            )
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await request.form()
            spec = self._multipart_json(form)
            uploads = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            dataset_keys = self._sample_dataset_keys(spec, org)
            if not uploads:
                raise detail(400, "No data sample provided.")
            folders = [self._extract_sample(upload) for upload in uploads]
        else:
            spec = await self._body(request)
            dataset_keys = self._sample_dataset_keys(spec, org)
            if "path" in spec:
                raw_paths = [spec["path"]]
            elif "paths" in spec and isinstance(spec["paths"], list):
                raw_paths = list(spec["paths"])
            else:
                raise detail(400, "missing field 'path' or 'paths'")
            if spec.get("multiple") and len(raw_paths) == 1:
                parent = self._servermedia_dir(raw_paths[0])
                raw_paths = [str(p) for p in sorted(parent.iterdir()) if p.is_dir()]
            folders = [self._servermedia_dir(p) for p in raw_paths]
        created = []
        with self.store.lock:
            for folder in folders:
                key = str(uuid.uuid4())
                record = {
                    "key": key,
                    "owner": org.organization_id,
                    "data_manager_keys": list(dataset_keys),
                    "creation_date": now(),
                    "_path": str(folder),
                    "_checksum": _folder_checksum(folder),
                    "_seq": self.store.next_sequence(),
                }
                self.store.samples[key] = record
                self.replica.created("DataSample", key, org.organization_id)
                for dataset_key in dataset_keys:
                    self.store.datasets[dataset_key]["data_sample_keys"].append(key)
                created.append(
                    {
                        "key": key,
                        "checksum": record["_checksum"],
                        "path": None,
                        "creation_date": record["creation_date"],
                        "owner": record["owner"],
                        "data_manager_keys": record["data_manager_keys"],
                    }
                )
        return _json_response(request, created, 201)

    def _sample_dataset_keys(self, spec: dict[str, Any], org: OrganizationContext) -> list[str]:
        keys = spec.get("data_manager_keys")
        if isinstance(keys, str):
            keys = [keys]
        if not keys:
            raise detail(400, "missing or empty field 'data_manager_keys'")
        with self.store.lock:
            local = [
                k for k in keys if k in self.store.datasets and self.store.datasets[k]["owner"] == org.organization_id
            ]
        if len(local) != len(keys):
            raise detail(
                400,
                "One or more datamanager keys provided do not exist in local database. "
                f"Please create them before. DataManager keys: {keys}",
            )
        return list(keys)

    def _servermedia_dir(self, raw: Any) -> Path:
        if not isinstance(raw, str) or not raw:
            raise detail(400, f"Invalid path {raw!r}")
        path = Path(raw)
        root = self.servermedias_root.resolve()
        if path.is_symlink():
            raise detail(400, f"Path {raw} is a symbolic link, which is not allowed")
        resolved = path.resolve()
        if root not in resolved.parents and resolved != root:
            raise detail(400, f"Path {raw} is not under the server media root {root}")
        if not resolved.is_dir():
            raise detail(400, f"Path {raw} is not an existing directory")
        if not any(resolved.iterdir()):
            raise detail(400, f"Directory {raw} is empty")
        return resolved

    def _extract_sample(self, upload: UploadFile) -> Path:
        target = self.workdir / "uploaded-samples" / str(uuid.uuid4())
        target.mkdir(parents=True)
        upload.file.seek(0)
        data = upload.file.read()
        try:
            _safe_extract(data, target)
        except ValueError as exc:
            shutil.rmtree(target, ignore_errors=True)
            raise detail(400, str(exc)) from exc
        if not any(p.is_file() for p in target.rglob("*")):
            shutil.rmtree(target, ignore_errors=True)
            raise detail(400, "The archive contains no file")
        return target

    async def sample_item(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        with self.store.lock:
            r = self._get(self.store.samples, request.path_params["key"], "DataSample", org)
            return _json_response(request, {k: r[k] for k in ("key", "owner", "data_manager_keys", "creation_date")})

    async def link_samples(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        body = await self._body(request)

        def as_list(value: Any) -> list[str]:
            if value is None:
                return []
            return [str(v) for v in value] if isinstance(value, list) else [str(value)]

        dataset_keys = as_list(body.get("data_manager_keys"))
        sample_keys = as_list(body.get("data_sample_keys"))
        errors = {
            f: ["This field is required."]
            for f, v in (("data_manager_keys", dataset_keys), ("data_sample_keys", sample_keys))
            if not v
        }
        if errors:
            raise ApiError(400, errors)
        with self.store.lock:
            for key in dataset_keys:
                dataset = self._get(self.store.datasets, key, "DataManager", org)
                if dataset["owner"] != org.organization_id:
                    raise detail(403, f"datamanager {key} is not owned by {org.organization_id}")
            for key in sample_keys:
                sample = self.store.samples.get(key)
                if sample is None:
                    raise detail(400, f"datasample {key} not found")
                if sample["owner"] != org.organization_id:
                    raise detail(403, f"datasample {key} is not owned by {org.organization_id}")
            for dataset_key in dataset_keys:
                dataset = self.store.datasets[dataset_key]
                for sample_key in sample_keys:
                    sample = self.store.samples[sample_key]
                    if dataset_key not in sample["data_manager_keys"]:
                        sample["data_manager_keys"].append(dataset_key)
                    if sample_key not in dataset["data_sample_keys"]:
                        dataset["data_sample_keys"].append(sample_key)
        return _json_response(request, {})

    # ---- functions ------------------------------------------------------------------------------

    def _function_view(self, record: dict[str, Any], base: str) -> dict[str, Any]:
        view = public_view(record)
        view["description"] = {
            "checksum": record["_description_checksum"],
            "storage_address": f"{base}/function/{record['key']}/description/",
        }
        view["archive"] = {
            "checksum": record["_archive_checksum"],
            "storage_address": f"{base}/function/{record['key']}/file/",
        }
        return view

    async def functions_root(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        base = self._base(request, org)
        if request.method == "GET":
            filters: dict[str, Predicate] = {
                "key": listing.in_list(lambda r: r["key"]),
                "name": listing.in_list(lambda r: r["name"]),
                "owner": listing.in_list(lambda r: r["owner"]),
                "compute_plan_key": self._function_in_plan,
                "match": listing.match_text(("key", "name")),
                "can_process": listing.permission_allows(lambda r: r["permissions"]["process"]),
                **listing.date_filters("creation_date"),
            }
            with self.store.lock:
                records = self._seen(self.store.functions.values(), "Function", org)
            return self._list(
                request,
                records,
                filters,
                ("creation_date", "key", "name", "owner"),
                view=lambda r: self._function_view(r, base),
            )
        form = await request.form()
        spec = self._multipart_json(form)
        if "inputs" not in spec or "outputs" not in spec:
            raise ServerCrash("KeyError: 'inputs' / 'outputs' missing from the function spec")
        archive, description = form.get("file"), form.get("description")
        if not isinstance(archive, UploadFile):
            raise ApiError(400, {"detail": [{"file": ["No file was submitted."]}], "key": NOT_COMPUTED})
        if not isinstance(description, UploadFile):
            raise ApiError(400, {"detail": [{"description": ["This field may not be null."]}], "key": NOT_COMPUTED})
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_METADATA_LEN:
            raise ApiError(
                400,
                {"detail": [{"name": [f"Invalid name {name!r}: 1 to 100 characters."]}], "key": NOT_COMPUTED},
            )
        inputs, outputs = self._function_io(spec["inputs"], spec["outputs"])
        metadata = self._check_metadata(spec.get("metadata"))
        permissions = self._request_permissions(spec.get("permissions"), org.organization_id, "permissions")
        archive.file.seek(0)
        problem = _archive_problem(archive.file.read())
        if problem:
            raise ApiError(400, {"detail": [{"file": [problem]}], "key": NOT_COMPUTED})
        key = str(uuid.uuid4())
        archive_path = self._store_upload(archive, "function", key, "function.tar.gz")
        description_path = self._store_upload(description, "function", key, "description.md")
        record: dict[str, Any] = {
            "key": key,
            "name": name,
            "owner": org.organization_id,
            "permissions": self._both(permissions),
            "metadata": metadata,
            "creation_date": now(),
            "inputs": inputs,
            "outputs": outputs,
            "status": FUNCTION_WAITING,
            "_archive_path": str(archive_path),
            "_description_path": str(description_path),
            "_archive_checksum": self._sha256(archive_path),
            "_description_checksum": self._sha256(description_path),
        }
        with self.store.lock:
            record["_seq"] = self.store.next_sequence()
            self.store.functions[key] = record
            self.replica.created("Function", key, org.organization_id)
        self.on_function_registered(key)
        body = self._function_view(record, base)
        body["description"] = str(description_path)
        body["file"] = str(archive_path)
        body["checksum"] = record["_archive_checksum"]
        return _json_response(request, body, 201)

    def _function_in_plan(self, record: dict[str, Any], raw: str) -> bool:
        for plan_key in listing.split_values(raw):
            for task_key in self.store.tasks_by_plan.get(plan_key, []):
                if self.store.tasks[task_key]["function"]["key"] == record["key"]:
                    return True
        return False

    @staticmethod
    def _function_io(inputs: Any, outputs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        if not isinstance(inputs, dict) or not isinstance(outputs, dict):
            raise detail(400, "function inputs and outputs must be objects keyed by identifier")
        clean_in: dict[str, Any] = {}
        for identifier, spec in inputs.items():
            if not isinstance(spec, dict) or spec.get("kind") not in (
                "ASSET_DATA_SAMPLE",
                "ASSET_DATA_MANAGER",
                "ASSET_MODEL",
            ):
                raise detail(
                    400,
                    f"invalid function input {identifier!r}: kind must be DATA_SAMPLE, DATA_MANAGER or MODEL",
                )
            optional, multiple = bool(spec.get("optional", False)), bool(spec.get("multiple", False))
            if spec["kind"] == "ASSET_DATA_MANAGER" and (optional or multiple):
                raise detail(
                    400,
                    f"invalid function input {identifier!r}: a data manager input cannot be optional or multiple",
                )
            clean_in[identifier] = {"kind": spec["kind"], "optional": optional, "multiple": multiple}
        clean_out: dict[str, Any] = {}
        for identifier, spec in outputs.items():
            if not isinstance(spec, dict) or spec.get("kind") not in ("ASSET_MODEL", "ASSET_PERFORMANCE"):
                raise detail(400, f"invalid function output {identifier!r}: kind must be MODEL or PERFORMANCE")
            multiple = bool(spec.get("multiple", False))
            if spec["kind"] == "ASSET_PERFORMANCE" and multiple:
                raise detail(400, f"invalid function output {identifier!r}: a performance output cannot be multiple")
            clean_out[identifier] = {"kind": spec["kind"], "multiple": multiple}
        return clean_in, clean_out

    async def function_item(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        key = request.path_params["key"]
        if request.method == "PUT":
            return await self._rename(request, org, self.store.functions, key, "Function")
        with self.store.lock:
            record = self._get(self.store.functions, key, "Function", org)
            return _json_response(request, self._function_view(record, self._base(request, org)))

    async def function_file(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        with self.store.lock:
            record = self._get(self.store.functions, request.path_params["key"], "Function", org)
        if not self._allowed(record["permissions"]["process"], org.organization_id):
            raise detail(403, "You do not have permission to perform this action.")
        return self._download(request, record["_archive_path"], "function.tar.gz")

    async def function_description(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        with self.store.lock:
            record = self._get(self.store.functions, request.path_params["key"], "Function", org)
        if not self._allowed(record["permissions"]["process"], org.organization_id):
            raise detail(403, "You do not have permission to perform this action.")
        return self._download(request, record["_description_path"], "description.md")

    # ---- compute plans --------------------------------------------------------------------------

    def _plan_view(self, record: dict[str, Any], org: OrganizationContext) -> dict[str, Any]:
        """The plan as ``org`` sees it: lagged under replication lag, ``creator`` "external" elsewhere."""
        self.store.refresh_plan(record)
        tasks = [self.store.tasks[k] for k in self.store.tasks_by_plan.get(record["key"], [])]
        view = public_view(self.replica.plan_view(record, tasks, org.organization_id))
        if record["owner"] != org.organization_id:
            view["creator"] = "external"  # the backend's name for a user of another organization
        return view

    async def plans_root(self, request: Request, org: OrganizationContext, token: Token) -> Response:
        if request.method == "GET":
            self._check_status_filter(
                request, (PLAN_CANCELED, PLAN_DONE, PLAN_FAILED, "PLAN_STATUS_CREATED", "PLAN_STATUS_DOING")
            )
            filters: dict[str, Predicate] = {
                "key": listing.in_list(lambda r: r["key"]),
                "name": listing.in_list(lambda r: r["name"]),
                "owner": listing.in_list(lambda r: r["owner"]),
                "tag": listing.in_list(lambda r: r["tag"]),
                "status": listing.in_list(lambda r: r["status"]),
                "creator": listing.equals(lambda r: r["creator"]),  # one exact value (CharFilter)
                "function_key": self._plan_uses_function,
                "metadata": listing.metadata_filter,
                "match": listing.match_text(("key", "name")),
                "duration_min": listing.number_bound("duration", minimum=True),
                "duration_max": listing.number_bound("duration", minimum=False),
                **listing.date_filters("creation_date", "start_date", "end_date"),
            }
            with self.store.lock:
                records = [self._plan_view(r, org) for r in self._seen(self.store.plans.values(), "ComputePlan", org)]
            return self._list(
                request,
                records,
                filters,
                (
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
                    "metadata__<k>",
                ),
                default_size=10,
            )
        body = await self._body(request)
        key = body.get("key")
        if not isinstance(key, str) or not is_uuid(key):
            raise ServerCrash(f"ValidationError: {key!r} is not a valid UUID")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_METADATA_LEN:
            raise detail(400, f"OE0101: invalid compute plan name {name!r}: 1 to 100 characters required")
        tag = body.get("tag") or ""
        if not isinstance(tag, str) or len(tag) > MAX_METADATA_LEN:
            raise detail(400, f"OE0101: invalid compute plan tag {tag!r}: at most 100 characters")
        metadata = self._check_metadata(body.get("metadata"))
        with self.store.lock:
            if key in self.store.plans:
                raise detail(409, f'OE0006: computeplan with key "{key}" already exists')
            record = {
                "key": key,
                "owner": org.organization_id,
                "tag": tag,
                "name": name,
                "creator": token.username,
                "creation_date": now(),
                "start_date": None,
                "end_date": None,
                "metadata": metadata,
                "failed_task_key": None,
                "status": "PLAN_STATUS_CREATED",
                "task_count": 0,
                "done_count": 0,
                "waiting_builder_slot_count": 0,
                "building_count": 0,
                "waiting_parent_tasks_count": 0,
                "waiting_executor_slot_count": 0,
                "executing_count": 0,
                "canceled_count": 0,
                "failed_count": 0,
                "_cancelled": None,
                "_seq": self.store.next_sequence(),
            }
            self.store.plans[key] = record
            self.store.tasks_by_plan[key] = []
            self.replica.created("ComputePlan", key, org.organization_id)
            body_out = {k: v for k, v in public_view(record).items() if k not in ("duration", "estimated_end_date")}
        return _json_response(request, body_out, 201)

    def _plan_uses_function(self, record: dict[str, Any], raw: str) -> bool:
        return any(
            self.store.tasks[t]["function"]["key"] == raw for t in self.store.tasks_by_plan.get(record["key"], [])
        )

    async def plan_item(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        key = request.path_params["key"]
        if request.method == "PUT":
            return await self._rename(request, org, self.store.plans, key, "ComputePlan")
        with self.store.lock:
            record = self._get(self.store.plans, key, "ComputePlan", org)
            return _json_response(request, self._plan_view(record, org))

    async def cancel_plan(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        """Cancel records a date and nothing else (``orch: computeplan.go``): queued tasks are aborted when a
        worker picks them up, tasks waiting for parents keep their status. A DONE plan can be cancelled."""
        with self.store.lock:
            plan = self._get(self.store.plans, request.path_params["key"], "ComputePlan", org)
            if plan["owner"] != org.organization_id:
                raise detail(403, f"OE0102: only the owner of compute plan {plan['key']} can cancel it")
            terminated = orchestration.is_terminated(plan)
            if not terminated:
                plan["_cancelled"] = now()
                self.store.refresh_plan(plan)
        if terminated:
            # OE0109 has no gRPC mapping: the backend retries it as Unknown, then answers a JSON 500.
            await asyncio.sleep(self.terminated_cancel_delay)
            raise detail(500, f"OE0109: compute plan {plan['key']} is already terminated")
        return _json_response(request, {})

    async def plan_performances(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        key = request.path_params["key"]
        with self.store.lock:
            rows = []
            for task_key in self.store.tasks_by_plan.get(key, []):
                task = self.store.tasks[task_key]
                for perf in self.store.performances.get(task_key, []):
                    rows.append(
                        {
                            "compute_task": {
                                "key": task_key,
                                "function_key": task["function"]["key"],
                                "rank": task["rank"],
                                "round_idx": task["metadata"].get("round_idx"),
                                "worker": task["worker"],
                            },
                            "identifier": perf["compute_task_output_identifier"],
                            "perf": perf["performance_value"],
                        }
                    )
        rows.sort(key=lambda r: (r["compute_task"]["rank"], r["compute_task"]["worker"]))
        stats = (
            {
                "compute_tasks_distinct_ranks": sorted({r["compute_task"]["rank"] for r in rows}),
                "compute_tasks_distinct_rounds": sorted(
                    {r["compute_task"]["round_idx"] for r in rows if r["compute_task"]["round_idx"] is not None}
                ),
            }
            if key in self.store.plans
            else {"compute_tasks_distinct_ranks": None, "compute_tasks_distinct_rounds": None}
        )
        return _json_response(request, {"results": rows, "compute_plan_statistics": stats})

    # ---- tasks ----------------------------------------------------------------------------------

    def _task_view(self, record: dict[str, Any], base: str) -> dict[str, Any]:
        view = public_view(record)
        view["function"] = self._function_view(self.store.functions[record["function"]["key"]], base)
        view["duration"] = _task_duration(record)
        return view

    async def list_tasks(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        self._check_status_filter(request, TASK_STATUSES)
        filters: dict[str, Predicate] = {
            "key": listing.in_list(lambda r: r["key"]),
            "owner": listing.in_list(lambda r: r["owner"]),
            "worker": listing.in_list(lambda r: r["worker"]),
            "rank": listing.in_list(lambda r: r["rank"]),
            "tag": listing.in_list(lambda r: r["tag"]),
            "status": listing.in_list(lambda r: r["status"]),
            "compute_plan_key": listing.in_list(lambda r: r["compute_plan_key"]),
            "function_key": listing.equals(lambda r: r["function"]["key"]),
            "metadata": listing.metadata_filter,
            "match": listing.match_text(("key",)),
            "duration_min": listing.number_bound("duration", minimum=True),
            "duration_max": listing.number_bound("duration", minimum=False),
            **listing.date_filters("creation_date", "start_date", "end_date"),
        }
        base = self._base(request, org)
        plan_filter = request.query_params.get("compute_plan_key")
        with self.store.lock:
            if plan_filter:  # use the per-plan index rather than scanning every task
                keys = [k for p in listing.split_values(plan_filter) for k in self.store.tasks_by_plan.get(p, [])]
                records = [self.store.tasks[k] for k in keys]
            else:
                records = list(self.store.tasks.values())
            if self.replica.enabled:
                records = [
                    self.replica.task_view(r, org.organization_id) for r in self._seen(records, "ComputeTask", org)
                ]
            if "duration_min" in request.query_params or "duration_max" in request.query_params:
                records = [{**r, "duration": _task_duration(r)} for r in records]
            return self._list(
                request,
                records,
                filters,
                (
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
                ),
                view=lambda r: self._task_view(r, base),
            )

    async def get_task(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        with self.store.lock:
            record = self._get(self.store.tasks, request.path_params["key"], "ComputeTask", org)
            record = self.replica.task_view(record, org.organization_id)
            return _json_response(request, self._task_view(record, self._base(request, org)))

    async def bulk_create_tasks(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        body = await self._body(request)
        if "tasks" not in body:
            raise ServerCrash("KeyError: 'tasks'")
        specs = body["tasks"]
        if not isinstance(specs, list):
            raise detail(400, "tasks must be a list")
        for spec in specs:
            if not isinstance(spec, dict) or "key" not in spec or "compute_plan_key" not in spec:
                raise ServerCrash("KeyError: 'key' or 'compute_plan_key' missing from a task")
            for ref in spec.get("inputs") or []:
                if not isinstance(ref, dict) or "asset_key" not in ref:
                    raise ServerCrash("KeyError: 'asset_key' missing from a task input")
        plan_keys = {spec["compute_plan_key"] for spec in specs}
        if len(plan_keys) > 1:
            raise detail(400, "All tasks should have the same compute plan key")
        if not specs:
            raise detail(400, "OE0101: at least one task is required")
        too_large = message_too_large(specs, self.max_message_bytes)
        if too_large:
            raise detail(413, too_large)
        plan_key = plan_keys.pop()
        base = self._base(request, org)
        with self.store.lock:
            plan = self.store.plans.get(plan_key)
            if plan is None:
                raise detail(400, "Invalid compute plan key")
            if plan["owner"] != org.organization_id:
                raise detail(403, f"OE0102: only the owner of compute plan {plan_key} can add tasks to it")
            # a FAILED or CANCELED plan still takes tasks (createTask checks no termination)
            records = self._validate_batch(specs, plan, org)
            created = []
            stamp = now()  # one timestamp for the whole batch, as the orchestrator's
            for record in records:
                record["_seq"] = self.store.next_sequence()
                record["creation_date"] = stamp
                function = self.store.functions[record["function"]["key"]]
                record["status"] = orchestration.initial_status(self.store, function, record["_parents"])
                self.store.tasks[record["key"]] = record
                self.store.tasks_by_plan[plan_key].append(record["key"])
                for parent in record["_parents"]:
                    self.store.children.setdefault(parent, []).append(record["key"])
                orchestration.register(self.store, record)
                self.replica.created("ComputeTask", record["key"], org.organization_id)
                view = self._task_view(record, base)
                view.pop("duration")  # not annotated on the create answer
                created.append(view)
            self.store.refresh_plan(plan)
        self.on_tasks_ready()
        return _json_response(request, created, 200)

    def _validate_batch(
        self, specs: list[dict[str, Any]], plan: dict[str, Any], org: OrganizationContext
    ) -> list[dict[str, Any]]:
        """Check a whole batch (all-or-nothing) and build its task records in parents-first order."""
        batch: dict[str, dict[str, Any]] = {}
        for spec in specs:
            key = spec["key"]
            if not is_uuid(key):
                raise detail(400, f"OE0101: invalid task key {key!r}: a UUID is required")
            if key in batch or key in self.store.tasks:
                raise detail(409, f'OE0006: computetask with key "{key}" already exists')
            batch[key] = spec
        ordered = _parents_first(batch, self.store.tasks)
        ranks: dict[str, int] = {}
        logs: dict[str, dict[str, Any]] = {}
        records = []
        for key in ordered:
            record = self._task_record(batch[key], plan, org, ranks, logs)
            ranks[key] = record["rank"]
            records.append(record)
        return records

    def _task_record(
        self,
        spec: dict[str, Any],
        plan: dict[str, Any],
        org: OrganizationContext,
        batch_ranks: dict[str, int],
        batch_logs: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        key = spec["key"]
        function = self.store.functions.get(spec.get("function_key") or "")
        if function is None:
            raise detail(404, f"OE0002: function {spec.get('function_key')!r} not found (task {key})")
        metadata = self._check_metadata(spec.get("metadata"))
        tag = spec.get("tag") or ""
        inputs = []
        by_identifier: dict[str, list[dict[str, Any]]] = {}
        parents: list[str] = []
        for ref in spec.get("inputs") or []:
            entry = {
                "identifier": ref.get("identifier"),
                "asset_key": ref.get("asset_key"),
                "parent_task_key": ref.get("parent_task_key"),
                "parent_task_output_identifier": ref.get("parent_task_output_identifier"),
            }
            has_asset = entry["asset_key"] is not None
            has_parent = entry["parent_task_key"] is not None and entry["parent_task_output_identifier"] is not None
            if has_asset == has_parent:
                raise detail(
                    400,
                    f"OE0101: task {key} input {entry['identifier']!r} needs an asset_key or a parent task reference",
                )
            if entry["identifier"] not in function["inputs"]:
                raise detail(
                    400,
                    f"OE0101: task {key} input {entry['identifier']!r} is not declared by function {function['key']}",
                )
            inputs.append(entry)
            by_identifier.setdefault(entry["identifier"], []).append(entry)
            if has_parent and entry["parent_task_key"] not in parents:
                parents.append(entry["parent_task_key"])
        for identifier, declared in function["inputs"].items():
            given = by_identifier.get(identifier, [])
            if not given and not declared["optional"]:
                raise detail(400, f"OE0101: task {key} misses the input {identifier!r} required by its function")
            if len(given) > 1 and not declared["multiple"]:
                raise detail(400, f"OE0101: task {key} input {identifier!r} is not multiple according to its function")
        outputs_spec = spec.get("outputs") or {}
        if not isinstance(outputs_spec, dict) or set(outputs_spec) != set(function["outputs"]):
            given_outputs = sorted(outputs_spec) if isinstance(outputs_spec, dict) else outputs_spec
            raise detail(
                400,
                f"OE0101: task {key} outputs {given_outputs} must match the function's {sorted(function['outputs'])}",
            )
        worker = spec.get("worker")
        dataset = None
        input_models: list[dict[str, Any]] = []
        for entry in inputs:
            kind = function["inputs"][entry["identifier"]]["kind"]
            if entry["asset_key"] is None:
                continue
            if kind == "ASSET_DATA_MANAGER":
                dataset = self.store.datasets.get(entry["asset_key"])
                if dataset is None:
                    raise detail(404, f"OE0002: datamanager {entry['asset_key']} not found (task {key})")
            elif kind == "ASSET_MODEL":  # a model given by key (GetCheckedModel)
                model = self.store.models.get(entry["asset_key"])
                if model is None:
                    raise detail(404, f"OE0002: model {entry['asset_key']} not found (task {key})")
                input_models.append(model)
        if dataset is not None:
            if worker and worker != dataset["owner"]:
                raise detail(400, f"OE0101: task {key}: worker {worker} must be the dataset owner {dataset['owner']}")
            worker = dataset["owner"]
        if not worker:
            raise detail(400, f"OE0101: task {key}: a worker is required when the task has no dataset input")
        if worker not in self.org_ids:
            raise detail(404, f"OE0002: task {key}: organization {worker!r} not found")
        for entry in inputs:
            kind = function["inputs"][entry["identifier"]]["kind"]
            if kind == "ASSET_DATA_SAMPLE":
                sample = self.store.samples.get(entry["asset_key"] or "")
                if sample is None:
                    raise detail(404, f"OE0002: datasample {entry['asset_key']} not found (task {key})")
                if dataset is None or dataset["key"] not in sample["data_manager_keys"]:
                    raise detail(
                        400,
                        f"OE0101: datasample {sample['key']} is not linked to the task's dataset (task {key})",
                    )
        try:
            permissions.check_task_registration(key, org.organization_id, worker, function, dataset)
            for model in input_models:
                self._check_model_input(key, worker, model, model["permissions"]["process"])
        except permissions.PermissionRefused as exc:
            raise detail(403, str(exc)) from exc
        ranks = []
        for entry in inputs:
            parent_key = entry["parent_task_key"]
            if parent_key is None:
                continue
            parent = self.store.tasks.get(parent_key)
            parent_function = self.store.functions[parent["function"]["key"]] if parent else None
            if parent is None:
                rank = batch_ranks.get(parent_key)
                if rank is None:
                    raise detail(404, f"OE0002: compute task {parent_key} not found (parent of task {key})")
                ranks.append(rank)
                continue
            ranks.append(parent["rank"])
            output_id = entry["parent_task_output_identifier"]
            if parent_function is None or output_id not in parent_function["outputs"]:
                raise detail(400, f"OE0101: task {key}: parent {parent_key} has no output {output_id!r}")
            try:
                for model in orchestration.models_of_output(self.store, parent_key, output_id):
                    self._check_model_input(key, worker, model, parent["outputs"][output_id]["permissions"]["process"])
                permissions.check_worker_reads(
                    key,
                    worker,
                    f"output {output_id!r} of task {parent_key}",
                    parent["outputs"][output_id]["permissions"]["process"],
                )
            except permissions.PermissionRefused as exc:
                raise detail(403, str(exc)) from exc
        outputs = {}
        for identifier, out in outputs_spec.items():
            out = out or {}
            # CreatePermissions(owner, ...): the task's owner is appended, even to public permissions
            perm = self._request_permissions(out.get("permissions"), org.organization_id, "permissions")
            if function["outputs"][identifier]["kind"] == "ASSET_PERFORMANCE":
                if not perm["public"]:
                    raise detail(
                        400, f'OE0101: invalid task output "{identifier}": a PERFORMANCE output should be public'
                    )
                if out.get("transient"):
                    raise detail(
                        400, f'OE0101: invalid task output "{identifier}": a PERFORMANCE output cannot be transient'
                    )
            outputs[identifier] = {
                "permissions": self._both(perm),
                "transient": bool(out.get("transient", False)),
            }
        logs_permission = (
            dict(dataset["logs_permission"])
            if dataset is not None
            else permissions.union([self._parent_logs_permission(p, batch_logs) for p in parents], org.organization_id)
        )
        batch_logs[key] = logs_permission
        return {
            "key": key,
            "owner": org.organization_id,
            "worker": worker,
            "compute_plan_key": plan["key"],
            "rank": (1 + max(ranks)) if ranks else 0,
            "tag": tag,
            "metadata": metadata,
            "status": TASK_WAITING_PARENTS,  # replaced by its initial status once stored (bulk_create)
            "error_type": None,
            "creation_date": now(),
            "start_date": None,
            "end_date": None,
            "logs_permission": logs_permission,
            "function": {"key": function["key"]},
            "inputs": inputs,
            "outputs": outputs,
            "_parents": parents,
        }

    def _parent_logs_permission(self, parent_key: str, batch_logs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        parent = self.store.tasks.get(parent_key)
        return parent["logs_permission"] if parent is not None else batch_logs[parent_key]

    def _check_model_input(self, task_key: str, worker: str, model: dict[str, Any], perm: dict[str, Any]) -> None:
        """GetCheckedModel: a disabled model is refused (400), and the worker must be allowed to process it."""
        if model.get("_disabled"):
            raise detail(400, f"OE0101: Model {model['key']} has been disabled (task {task_key})")
        permissions.check_worker_reads(task_key, worker, f"model {model['key']}", perm)

    async def task_input_assets(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        base = self._base(request, org)
        with self.store.lock:
            task = self.store.tasks.get(request.path_params["key"])
            items = []
            if task is not None:
                function = self.store.functions[task["function"]["key"]]
                for entry in task["inputs"]:
                    kind = function["inputs"][entry["identifier"]]["kind"]
                    asset = self._input_asset(entry, kind, base)
                    if asset is not None:
                        items.append({"identifier": entry["identifier"], "kind": kind, "asset": asset})
            return self._list(request, items, {}, (), view=lambda r: r)

    def _input_asset(self, entry: dict[str, Any], kind: str, base: str) -> dict[str, Any] | None:
        if entry["asset_key"] is not None:
            if kind == "ASSET_DATA_MANAGER":
                record = self.store.datasets[entry["asset_key"]]
                view = {k: v for k, v in public_view(record).items() if k != "data_sample_keys"}
                view["opener"] = {
                    "checksum": record["_opener_checksum"],
                    "storage_address": f"{base}/data_manager/{record['key']}/opener/",
                }
                view["description"] = {
                    "checksum": record["_description_checksum"],
                    "storage_address": f"{base}/data_manager/{record['key']}/description/",
                }
                return view
            sample = self.store.samples[entry["asset_key"]]
            return {k: sample[k] for k in ("key", "owner", "data_manager_keys", "creation_date")}
        for model in self.store.models.values():
            if (
                model["compute_task_key"] == entry["parent_task_key"]
                and model["_identifier"] == entry["parent_task_output_identifier"]
            ):
                return self._model_view(model, base)
        return None

    async def task_output_assets(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        base = self._base(request, org)
        key = request.path_params["key"]
        with self.store.lock:
            items = [
                {"identifier": m["_identifier"], "kind": "ASSET_MODEL", "asset": self._model_view(m, base)}
                for m in self.store.models.values()
                if m["compute_task_key"] == key
            ]
            items += [
                {
                    "identifier": p["compute_task_output_identifier"],
                    "kind": "ASSET_PERFORMANCE",
                    "asset": dict(p),
                }
                for p in self.store.performances.get(key, [])
            ]
        filters: dict[str, Predicate] = {
            "identifier": listing.in_list(lambda r: r["identifier"]),
            "kind": self._valid_kind_filter,
        }
        return self._list(request, items, filters, (), view=lambda r: r)

    @staticmethod
    def _valid_kind_filter(record: dict[str, Any], raw: str) -> bool:
        wanted = [v for v in listing.split_values(raw) if v in ("ASSET_MODEL", "ASSET_PERFORMANCE")]
        return not wanted or record["kind"] in wanted  # invalid values are ignored

    async def task_logs(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        key = request.path_params["key"]
        with self.store.lock:
            task = self._get(self.store.tasks, key, "ComputeTask", org)
            log_path = task.get("_log_path")
            failed = task["status"] == "STATUS_FAILED"
        if not self._allowed(task["logs_permission"], org.organization_id):
            raise detail(403, "You do not have permission to perform this action.")
        if not failed or not log_path or not Path(log_path).exists():
            raise detail(410, "Asset not available anymore")
        return FileResponse(
            log_path,
            media_type="text/plain; charset=utf-8",
            filename=f"tuple_logs_{key}.txt",
            content_disposition_type="attachment",
        )

    # ---- task profiling -------------------------------------------------------------------------

    @staticmethod
    def _profiling_view(task: dict[str, Any]) -> dict[str, Any]:
        """Step durations of a task in microseconds, as ``TaskProfilingSerializer``."""
        duration = None
        if task["start_date"] and task["end_date"]:
            elapsed = parse_time(task["end_date"]) - parse_time(task["start_date"])
            duration = int(elapsed.total_seconds() * 1_000_000)
        return {"compute_task_key": task["key"], "task_duration": duration, "execution_rundown": task["_profiling"]}

    async def list_profiling(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        with self.store.lock:
            records = [t for t in self._seen(self.store.tasks.values(), "ComputeTask", org) if "_profiling" in t]
        return self._list(request, records, {}, ("creation_date", "key"), view=self._profiling_view)

    async def get_profiling(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        with self.store.lock:
            task = self.store.tasks.get(request.path_params["key"])
            if task is None or "_profiling" not in task:
                raise detail(404, "No TaskProfiling matches the given query.")
            return _json_response(request, self._profiling_view(task))

    # ---- models ---------------------------------------------------------------------------------

    def _model_view(self, record: dict[str, Any], base: str) -> dict[str, Any]:
        view = public_view(record)
        view["address"] = (
            {"checksum": record["_checksum"], "storage_address": f"{base}/model/{record['key']}/file/"}
            if record.get("_path")
            else None
        )
        return view

    async def list_models(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        base = self._base(request, org)
        filters: dict[str, Predicate] = {
            "key": listing.in_list(lambda r: r["key"]),
            "owner": listing.in_list(lambda r: r["owner"]),
            "compute_task": listing.in_list(lambda r: r["compute_task_key"]),
            "compute_task_key": listing.in_list(lambda r: r["compute_task_key"]),
            **listing.date_filters("creation_date"),
        }
        with self.store.lock:
            records = self._seen(self.store.models.values(), "Model", org)
        return self._list(request, records, filters, ("creation_date", "key"), view=lambda r: self._model_view(r, base))

    async def get_model(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        with self.store.lock:
            record = self._get(self.store.models, request.path_params["key"], "Model", org)
            return _json_response(request, self._model_view(record, self._base(request, org)))

    async def model_file(self, request: Request, org: OrganizationContext, _: Token) -> Response:
        with self.store.lock:
            record = self._get(self.store.models, request.path_params["key"], "Model", org)
        # an end user's download is an export: the channel must allow it (model_export_enabled)
        if not self.model_export:
            reason = f"Disabled: model_export_enabled is disabled on {org.organization_id}"
            raise detail(403, f"(AssetPermissionError({reason!r}), 'Unauthorized')")
        if not self._allowed(record["permissions"]["download"], org.organization_id):
            raise detail(403, "(AssetPermissionError(), 'Unauthorized')")
        if not record.get("_path") or not Path(record["_path"]).exists():
            raise detail(410, "Asset not available anymore")
        return FileResponse(
            record["_path"],
            filename=record["key"],
            media_type="application/octet-stream",
            content_disposition_type="attachment",
        )


# ---- helpers ------------------------------------------------------------------------------------


def _task_duration(record: dict[str, Any]) -> int:
    from .store import _seconds_between

    return _seconds_between(record.get("start_date"), record.get("end_date"))


def _parents_first(batch: dict[str, dict[str, Any]], registered: dict[str, Any]) -> list[str]:
    """Topological order of a batch; parents must be in the batch or already registered."""
    deps: dict[str, set[str]] = {}
    for key, spec in batch.items():
        parents = {ref.get("parent_task_key") for ref in spec.get("inputs") or [] if ref.get("parent_task_key")}
        for parent in parents:
            if parent not in batch and parent not in registered:
                raise detail(404, f"OE0002: compute task {parent} not found (a parent in the batch)")
        deps[key] = {p for p in parents if p in batch}
    ordered: list[str] = []
    placed: set[str] = set()
    remaining = list(batch)
    while remaining:
        ready = [k for k in remaining if deps[k] <= placed]
        if not ready:
            raise detail(400, f"OE0101: cyclic dependency in the batch or unknown task parent ({remaining[0]})")
        ordered.extend(ready)
        placed.update(ready)
        remaining = [k for k in remaining if k not in placed]
    return ordered


def _entry_problem(name: str) -> str | None:
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts:
        return f"Archive entry {name!r} escapes the archive folder"
    return None


def _archive_members(data: bytes) -> tuple[str, list[str]] | None:
    """(format, entry names) of a zip or tar (any compression) archive, or None."""
    buffer = io.BytesIO(data)
    if zipfile.is_zipfile(buffer):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "zip", archive.namelist()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            return "tar", archive.getnames()
    except tarfile.TarError:
        return None


def _archive_problem(data: bytes) -> str | None:
    """Why a function archive is refused, as the server words it, or None."""
    members = _archive_members(data)
    if members is None:
        return "Archive must be zip or tar.*"
    _, names = members
    for name in names:
        problem = _entry_problem(name)
        if problem:
            return problem
    normalized = {str(PurePosixPath(n)) for n in names}
    if "Dockerfile" not in normalized:
        return "Ensure your archive contains a Dockerfile."
    if len(names) < 2:
        return "Ensure your archive contains at least one python file."
    return None


def _safe_extract(data: bytes, target: Path) -> None:
    """Extract a zip or tar archive, refusing entries that would land outside ``target``."""
    members = _archive_members(data)
    if members is None:
        raise ValueError("Archive must be zip or tar.*")
    kind, names = members
    for name in names:
        problem = _entry_problem(name)
        if problem:
            raise ValueError(problem)
    if kind == "zip":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            archive.extractall(target)
    else:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for member in archive.getmembers():
                if member.issym() or member.islnk():
                    raise ValueError(f"Archive entry {member.name!r} is a link, which is not allowed")
            archive.extractall(target, filter="data")


def _folder_checksum(folder: Path) -> str:
    """sha256 over the relative paths and contents of every file of a folder, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
