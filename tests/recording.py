"""Shared support for cassette tests (vcrpy through pytest-recording).

Replay (the default, and CI): record mode ``none``, network blocked, requests matched on method +
path + query only (the node's port and multipart boundaries change between runs), polling waits
of zero, and a dummy base URL: nothing leaves the process.

Recording (``scripts/record-cassettes``): ``SUBSTRA_FLOWS_RECORD=1`` starts a local node, or uses a
real deployment given ``SUBSTRA_URL`` and ``SUBSTRA_TOKEN`` (and ``SUBSTRA_URL_2`` /
``SUBSTRA_TOKEN_2`` for a second organization; ``SUBSTRA_USERNAME`` / ``SUBSTRA_PASSWORD`` and
``SUBSTRA_SERVERMEDIAS_ROOT``, with the same suffixes, for login and server-path sample tests).
Tokens, passwords and login responses are scrubbed before anything is written. The targets' URL
paths and organization ids are saved in ``tests/cassettes/targets.json`` so that replay sends the
very same paths.

Cassette tests must be deterministic: every key they choose (plan keys, task keys) comes from
:func:`stable_key`, never from ``uuid4``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

CASSETTES = Path(__file__).parent / "cassettes"
TARGETS_FILE = CASSETTES / "targets.json"
REDACTED = "REDACTED"
REPLAY_HOST = "http://127.0.0.1:9"  # discard port: a request that escapes the cassette fails at once
SECRET_FIELDS = ("password", "token", "username")
#: environment of a local node's build phase in tests: pip never reaches a package index
OFFLINE_BUILD = {"PIP_NO_INDEX": "1"}
#: what the tests' nodes opt in to, away from a default deployment's settings: model export on (tests
#: download models), no minimum build time (speed), builds that never reach a package index (the example
#: functions' ``RUN pip install substratools==1.0.0`` is satisfied by the node's own packages)
TEST_NODE_OPTIONS: dict[str, Any] = {"model_export": True, "build_seconds": 0.0, "build_env": OFFLINE_BUILD}


def recording() -> bool:
    """True when cassettes are being (re)written."""
    return os.environ.get("SUBSTRA_FLOWS_RECORD") == "1"


def stable_key(*parts: str) -> str:
    """A UUID derived from a test's own name: the same on recording and on replay."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "substra-flows-tests/" + "/".join(parts)))


@dataclass(frozen=True)
class Target:
    """One organization as a cassette test sees it."""

    url: str
    token: str
    organization_id: str
    polling_period: float
    #: login credentials: real ones while recording, ``REDACTED`` on replay (login bodies are scrubbed)
    username: str = REDACTED
    password: str = field(default=REDACTED, repr=False)
    #: folder under which the node accepts server-path samples; known while recording only ("" on replay,
    #: where request bodies are not matched, so any folder will do)
    servermedias_root: str = ""

    def __repr__(self) -> str:
        return f"Target(url={self.url!r}, organization_id={self.organization_id!r})"


def _scrub_request(request: Any) -> Any:
    if "authorization" in {k.lower() for k in request.headers}:
        for name in list(request.headers):
            if name.lower() == "authorization":
                request.headers[name] = f"Token {REDACTED}"
    body = request.body
    if body and urlsplit(request.uri).path.endswith("/api-token-auth/"):
        text = body.decode() if isinstance(body, bytes) else body
        scrubbed = urlencode([(k, REDACTED if k in SECRET_FIELDS else v) for k, v in parse_qsl(text)])
        request.body = scrubbed.encode()
    return request


def _scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    body = response.get("body", {}).get("string")
    if not body:
        return response
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return response
    if isinstance(data, dict) and "token" in data:
        data["token"] = REDACTED
        response["body"]["string"] = json.dumps(data).encode()
    return response


def vcr_settings() -> dict[str, Any]:
    """The ``vcr_config`` every cassette test uses."""
    return {
        "match_on": ["method", "path", "query"],
        "filter_headers": [("authorization", f"Token {REDACTED}")],
        "before_record_request": _scrub_request,
        "before_record_response": _scrub_response,
        "decode_compressed_response": True,
        "allow_playback_repeats": False,
    }


def _recorded_targets() -> list[dict[str, str]]:
    if not TARGETS_FILE.exists():
        raise RuntimeError(f"{TARGETS_FILE} is missing: record the cassettes first (scripts/record-cassettes)")
    return json.loads(TARGETS_FILE.read_text())


@pytest.fixture(scope="session")
def substra_targets() -> Iterator[list[Target]]:
    """Two organizations: live ones while recording, the recorded paths behind a dead host on replay."""
    if not recording():
        yield [
            Target(url=REPLAY_HOST + t["path"], token=REDACTED, organization_id=t["organization_id"], polling_period=0)
            for t in _recorded_targets()
        ]
        return
    if os.environ.get("SUBSTRA_URL"):
        targets = [
            Target(
                os.environ[f"SUBSTRA_URL{s}"],
                os.environ[f"SUBSTRA_TOKEN{s}"],
                "",
                polling_period=1.0,
                username=os.environ.get(f"SUBSTRA_USERNAME{s}", ""),
                password=os.environ.get(f"SUBSTRA_PASSWORD{s}", ""),
                servermedias_root=os.environ.get(f"SUBSTRA_SERVERMEDIAS_ROOT{s}", ""),
            )
            for s in ("", "_2")
            if os.environ.get(f"SUBSTRA_URL{s}")
        ]
        yield _with_org_ids(targets)
        return
    from substra_flows.local_node import LocalNode

    with LocalNode(organizations=2, **TEST_NODE_OPTIONS) as node:
        media_root = str(node.servermedias_root)
        yield _with_org_ids(
            [
                Target(o.url, o.token, o.organization_id, 0.2, o.username, o.password, media_root)
                for o in node.organizations
            ]
        )


def _with_org_ids(targets: list[Target]) -> list[Target]:
    """Ask each target who it is, and save the paths and ids replay needs."""
    import requests

    resolved = []
    for target in targets:
        info = requests.get(
            f"{target.url.rstrip('/')}/info/",
            headers={"Authorization": f"Token {target.token}", "Accept": "application/json;version=0.0"},
            timeout=30,
        ).json()
        resolved.append(replace(target, organization_id=info["organization_id"]))
    CASSETTES.mkdir(exist_ok=True)
    TARGETS_FILE.write_text(
        json.dumps(
            [{"path": urlsplit(t.url).path.rstrip("/"), "organization_id": t.organization_id} for t in resolved],
            indent=2,
        )
        + "\n"
    )
    return resolved
