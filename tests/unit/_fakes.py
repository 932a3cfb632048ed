"""Unit-test harness: an in-process fake Substra server mounted as a requests adapter.

No socket is opened: ``FakeAdapter.send`` answers canned ``requests.Response`` objects built
from small route handlers (a stateful mini-server for plans/tasks/pages) plus a queue of
one-shot faults (error statuses, exceptions) for retry tests.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from substra_flows import SubstraClient

BASE = "http://substra.test/org-1"
TOKEN = "0123456789abcdef0123456789abcdef01234567"
NOW = "2024-05-01T10:00:00.000000Z"


@dataclass
class Call:
    """One request seen by the fake."""

    method: str
    url: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    timeout: Any

    def json(self) -> Any:
        return json.loads(self.body)


Reply = tuple[int, Any, dict[str, str]]


@dataclass
class FakeAdapter(BaseAdapter):
    """Routes requests to handlers; ``faults`` are consumed first (one per matching request)."""

    routes: list[tuple[str, re.Pattern[str], Callable[..., Reply]]] = field(default_factory=list)
    faults: list[tuple[str, re.Pattern[str], Any]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def route(self, method: str, pattern: str, handler: Callable[..., Reply]) -> None:
        """Answer ``method`` + path regex (relative to the org prefix) with ``handler(call, match)``."""
        self.routes.insert(0, (method, re.compile(f"^{pattern}$"), handler))

    def fault(self, method: str, pattern: str, outcome: Any, times: int = 1) -> None:
        """Next ``times`` matching requests get ``outcome``: an exception to raise or a Reply."""
        for _ in range(times):
            self.faults.append((method, re.compile(f"^{pattern}$"), outcome))

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        parts = urlsplit(request.url)
        path = parts.path.removeprefix(urlsplit(BASE).path)
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        call = Call(
            request.method,
            request.url,
            path,
            parse_qs(parts.query),
            dict(request.headers),
            body,
            kwargs.get("timeout"),
        )
        self.calls.append(call)
        for i, (method, pattern, outcome) in enumerate(self.faults):
            if method == request.method and pattern.match(path):
                del self.faults[i]
                if isinstance(outcome, BaseException):
                    raise outcome
                return build_response(request, *outcome)
        for method, pattern, handler in self.routes:
            match = pattern.match(path)
            if method == request.method and match:
                return build_response(request, *handler(call, match))
        return build_response(request, 404, {"detail": "Not found."}, {})

    def close(self) -> None:
        pass

    def paths(self, method: str | None = None) -> list[str]:
        return [c.path for c in self.calls if method is None or c.method == method]


def build_response(
    request: requests.PreparedRequest, status: int, body: Any, headers: dict[str, str]
) -> requests.Response:
    """A real requests.Response around bytes."""
    response = requests.Response()
    response.status_code = status
    response.reason = {200: "OK", 201: "Created", 401: "Unauthorized", 404: "Not Found"}.get(status, "Status")
    response.request = request
    response.url = request.url
    headers = dict(headers)
    if isinstance(body, (bytes, str)):
        raw = body.encode() if isinstance(body, str) else body
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
    else:
        raw = json.dumps(body).encode() if body is not None else b""
        headers.setdefault("Content-Type", "application/json;version=0.0")
    response.headers = CaseInsensitiveDict(headers)
    response.raw = io.BytesIO(raw)
    response.encoding = "utf-8"
    return response


# -- a stateful mini server --------------------------------------------------------------------


def perms(*orgs: str) -> dict:
    p = {"public": False, "authorized_ids": list(orgs) or ["MyOrg1MSP"]}
    return {"process": p, "download": p}


def function_body(key: str, status: str = "FUNCTION_STATUS_READY") -> dict:
    return {
        "key": key,
        "name": "fn",
        "owner": "MyOrg1MSP",
        "permissions": perms(),
        "metadata": {},
        "creation_date": NOW,
        "description": {"checksum": "c", "storage_address": f"{BASE}/function/{key}/description/"},
        "archive": {"checksum": "c", "storage_address": f"{BASE}/function/{key}/file/"},
        "inputs": {"opener": {"kind": "ASSET_DATA_MANAGER", "optional": False, "multiple": False}},
        "outputs": {"model": {"kind": "ASSET_MODEL", "multiple": False}},
        "status": status,
    }


def plan_body(key: str, name: str = "plan", status: str = "PLAN_STATUS_CREATED", **extra: Any) -> dict:
    body = {
        "key": key,
        "owner": "MyOrg1MSP",
        "tag": "",
        "name": name,
        "creator": "alice",
        "creation_date": NOW,
        "start_date": None,
        "end_date": None,
        "metadata": {},
        "failed_task_key": None,
        "status": status,
        "task_count": 0,
    }
    body.update(extra)
    return body


def task_body(key: str, plan_key: str, status: str = "STATUS_DONE", error_type: str | None = None) -> dict:
    return {
        "key": key,
        "owner": "MyOrg1MSP",
        "worker": "MyOrg1MSP",
        "compute_plan_key": plan_key,
        "rank": 0,
        "tag": "",
        "metadata": {},
        "status": status,
        "error_type": error_type,
        "creation_date": NOW,
        "start_date": None,
        "end_date": None,
        "function": function_body(str(uuid.UUID(int=1))),
        "inputs": [],
        "outputs": {},
    }


class MiniServer:
    """Just enough state for plans, tasks and pages."""

    def __init__(self, adapter: FakeAdapter) -> None:
        self.plans: dict[str, dict] = {}
        self.tasks: dict[str, dict] = {}
        self.adapter = adapter
        a = adapter
        a.route("POST", r"/api-token-auth/", self.login)
        a.route("DELETE", r"/active-api-tokens/", lambda c, m: (200, {"detail": "Token removed"}, {}))
        a.route("POST", r"/compute_plan/", self.create_plan)
        a.route("GET", r"/compute_plan/([^/]+)/", self.get_plan)
        a.route("POST", r"/task/bulk_create/", self.bulk_create)
        a.route("GET", r"/task/", self.list_tasks)
        a.route("GET", r"/task/([^/]+)/", self.get_task)
        a.route("GET", r"/task/([^/]+)/logs/", self.get_logs)
        self.logs: dict[str, str] = {}
        self.logins = 0

    def login(self, call: Call, match: re.Match) -> Reply:
        form = parse_qs(call.body.decode())
        if form.get("password") != ["s3cret-pass"]:
            return 400, {"non_field_errors": ["Unable to log in with provided credentials."]}, {}
        self.logins += 1
        token = f"{self.logins:040x}"
        return 200, {"id": str(uuid.uuid4()), "expires_at": NOW, "created_at": NOW, "token": token}, {}

    def create_plan(self, call: Call, match: re.Match) -> Reply:
        body = call.json()
        if body["key"] in self.plans:
            return 409, {"detail": f'OE0006: computeplan with key "{body["key"]}" already exists'}, {}
        self.plans[body["key"]] = plan_body(body["key"], body["name"], metadata=body.get("metadata") or {})
        return 201, self.plans[body["key"]], {}

    def get_plan(self, call: Call, match: re.Match) -> Reply:
        plan = self.plans.get(match.group(1))
        if plan is None:
            return 404, {"detail": "No ComputePlan matches the given query."}, {}
        return 200, {**plan, "task_count": sum(t["compute_plan_key"] == plan["key"] for t in self.tasks.values())}, {}

    def bulk_create(self, call: Call, match: re.Match) -> Reply:
        tasks = call.json()["tasks"]
        if any(t["key"] in self.tasks for t in tasks):
            return 409, {"detail": "OE0006: task already exists"}, {}
        for t in tasks:
            if t["compute_plan_key"] not in self.plans:
                return 400, {"detail": "Invalid compute plan key"}, {}
            for i in t["inputs"]:
                if i["parent_task_key"] and i["parent_task_key"] not in self.tasks:
                    return 400, {"detail": "unknown task parent"}, {}
            self.tasks[t["key"]] = task_body(t["key"], t["compute_plan_key"], "STATUS_WAITING_FOR_PARENT_TASKS")
        return 200, [self.tasks[t["key"]] for t in tasks], {}

    def get_task(self, call: Call, match: re.Match) -> Reply:
        task = self.tasks.get(match.group(1))
        return (200, task, {}) if task else (404, {"detail": "Not found."}, {})

    def get_logs(self, call: Call, match: re.Match) -> Reply:
        text = self.logs.get(match.group(1))
        return (200, text, {}) if text is not None else (404, {"detail": "Not found."}, {})

    def list_tasks(self, call: Call, match: re.Match) -> Reply:
        items = list(self.tasks.values())
        q = {k: v[-1] for k, v in call.query.items()}  # last value wins, like Django
        if "key" in q:
            wanted = set(q["key"].split(","))
            items = [t for t in items if t["key"] in wanted]
        if "compute_plan_key" in q:
            items = [t for t in items if t["compute_plan_key"] == q["compute_plan_key"]]
        return paginate(call, items)


def paginate(call: Call, items: list, default_size: int = 100) -> Reply:
    """DRF-like page with absolute next links that already hold every query parameter."""
    q = {k: v[-1] for k, v in call.query.items()}
    page = int(q.get("page", 1))
    size = int(q.get("page_size", default_size))
    chunk = items[(page - 1) * size : page * size]
    next_url = None
    if page * size < len(items):
        params = {**q, "page": str(page + 1)}
        next_url = call.url.split("?")[0] + "?" + "&".join(f"{k}={v}" for k, v in params.items())
    return 200, {"count": len(items), "next": next_url, "previous": None, "results": chunk}, {}


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def adapter() -> FakeAdapter:
    return FakeAdapter()


@pytest.fixture
def server(adapter: FakeAdapter) -> MiniServer:
    return MiniServer(adapter)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(
    adapter: FakeAdapter, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., SubstraClient]:
    """Build clients whose session talks to the fake and whose sleeps are recorded, not slept."""
    for name in list(__import__("os").environ):
        if name.startswith("SUBSTRA_"):
            monkeypatch.delenv(name)

    def make(**kwargs: Any) -> SubstraClient:
        session = requests.Session()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        kwargs.setdefault("url", BASE)
        if "username" not in kwargs:
            kwargs.setdefault("token", TOKEN)
        client = SubstraClient(session=session, **kwargs)
        client.transport.sleep = sleeps.append
        client._sleep = sleeps.append
        return client

    return make


@pytest.fixture
def client(make_client: Callable[..., SubstraClient], server: MiniServer) -> SubstraClient:
    return make_client()
