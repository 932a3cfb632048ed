"""The local node's wire behaviour, over raw HTTP: auth, errors, transport rules, pagination."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from typing import Any

import pytest
import requests

from substra_flows.local_node import LocalNode, NodeOrganization

pytestmark = pytest.mark.live

ACCEPT = "application/json;version=0.0"


def _headers(org: NodeOrganization, token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Token {token or org.token}", "Accept": ACCEPT}


def _new_plan(org: NodeOrganization, **extra: Any) -> requests.Response:
    body = {"key": str(uuid.uuid4()), "name": "api test plan", **extra}
    return requests.post(f"{org.url}/compute_plan/", json=body, headers=_headers(org), timeout=10)


@pytest.fixture()
def org(local_node: LocalNode) -> NodeOrganization:
    return local_node.organizations[0]


def test_missing_token_is_401_with_www_authenticate(org: NodeOrganization) -> None:
    response = requests.get(f"{org.url}/compute_plan/", headers={"Accept": ACCEPT}, timeout=10)
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}
    assert response.headers["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("header", ["Token 0123456789abcdef0123456789abcdef01234567", "Token None"])
def test_wrong_token_is_401_invalid(org: NodeOrganization, header: str) -> None:
    response = requests.get(f"{org.url}/task/", headers={"Authorization": header}, timeout=10)
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}


def test_bearer_scheme_counts_as_anonymous(org: NodeOrganization) -> None:
    response = requests.get(f"{org.url}/task/", headers={"Authorization": f"Bearer {org.token}"}, timeout=10)
    assert response.status_code == 401
    assert response.json()["detail"] == "Authentication credentials were not provided."


def test_token_of_another_organization_is_rejected(local_node: LocalNode) -> None:
    org1, org2 = local_node.organizations
    response = requests.get(f"{org2.url}/task/", headers=_headers(org2, token=org1.token), timeout=10)
    assert response.status_code == 401


def test_login_logout_cycle(org: NodeOrganization) -> None:
    bad = requests.post(f"{org.url}/api-token-auth/", data={"username": org.username, "password": "nope"}, timeout=10)
    assert bad.status_code == 400
    assert bad.json() == {"non_field_errors": ["Unable to log in with provided credentials."]}
    missing = requests.post(f"{org.url}/api-token-auth/", data={"username": org.username}, timeout=10)
    assert missing.json() == {"password": ["This field is required."]}

    login = requests.post(
        f"{org.url}/api-token-auth/", data={"username": org.username, "password": org.password}, timeout=10
    )
    assert login.status_code == 200
    body = login.json()
    assert {"id", "token", "expires_at", "created_at"} <= body.keys()
    assert len(body["token"]) == 40
    assert requests.get(f"{org.url}/info/", headers=_headers(org, body["token"]), timeout=10).json()["user"]

    out = requests.delete(f"{org.url}/active-api-tokens/", params={"id": body["id"]}, headers=_headers(org), timeout=10)
    assert out.json() == {"detail": "Token removed"}
    again = requests.delete(
        f"{org.url}/active-api-tokens/", params={"id": body["id"]}, headers=_headers(org), timeout=10
    )
    assert again.status_code == 404
    assert requests.get(f"{org.url}/task/", headers=_headers(org, body["token"]), timeout=10).status_code == 401


def test_info_anonymous_and_authenticated(org: NodeOrganization) -> None:
    anonymous = requests.get(f"{org.url}/info/", timeout=10).json()
    assert "channel" not in anonymous and anonymous["organization_id"] == org.organization_id
    full = requests.get(f"{org.url}/info/", headers=_headers(org), timeout=10)
    assert full.headers["Content-Type"] == ACCEPT
    assert full.json()["config"] == {"model_export_enabled": True}  # the session node opts in (conftest.py)


def test_unacceptable_accept_header_is_406(org: NodeOrganization) -> None:
    response = requests.get(f"{org.url}/info/", headers={"Accept": "text/html"}, timeout=10)
    assert response.status_code == 406


def test_unknown_key_is_404(org: NodeOrganization) -> None:
    for route in ("compute_plan", "task", "data_manager", "function", "model", "data_sample"):
        well_formed = requests.get(f"{org.url}/{route}/{uuid.uuid4()}/", headers=_headers(org), timeout=10)
        assert well_formed.status_code == 404, route
        assert (
            well_formed.json()["detail"].startswith("No ") and "matches the given query" in well_formed.json()["detail"]
        )
    garbage = requests.get(f"{org.url}/compute_plan/not-a-key/", headers=_headers(org), timeout=10)
    assert garbage.status_code == 404 and garbage.json() == {"detail": "Not found."}


def test_duplicate_plan_key_is_409_without_key(org: NodeOrganization) -> None:
    key = str(uuid.uuid4())
    assert _new_plan(org, key=key).status_code == 201
    duplicate = _new_plan(org, key=key)
    assert duplicate.status_code == 409
    assert duplicate.json() == {"detail": f'OE0006: computeplan with key "{key}" already exists'}


def test_metadata_key_with_double_underscore_is_400(org: NodeOrganization) -> None:
    response = _new_plan(org, metadata={"bad__key": "1"})
    assert response.status_code == 400
    assert response.json() == {"detail": '"__" cannot be used in a metadata key, please use simple underscore instead'}


def test_malformed_dataset_spec_is_400_naming_the_field(org: NodeOrganization) -> None:
    files = {
        "json": (
            None,
            json.dumps({"name": "no description", "permissions": {"public": True, "authorized_ids": []}}),
        ),
        "data_opener": ("opener.py", b"print('x')"),
    }
    response = requests.post(f"{org.url}/data_manager/", files=files, headers=_headers(org), timeout=10)
    assert response.status_code == 400
    assert response.json() == {
        "detail": [{"description": ["This field may not be null."]}],
        "key": "(not computed)",
    }

    files = {"json": (None, json.dumps({"name": "x"})), "description": ("d.md", b"# d")}
    response = requests.post(f"{org.url}/data_manager/", files=files, headers=_headers(org), timeout=10)
    assert response.status_code == 400
    assert "data_opener" in json.dumps(response.json()) or "file is 'None'" in json.dumps(response.json())


def test_function_archive_without_dockerfile_is_400(org: NodeOrganization) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("function.py", "print(1)")
        archive.writestr("README", "x")
    spec = {
        "name": "no dockerfile",
        "inputs": {},
        "outputs": {},
        "permissions": {"public": True, "authorized_ids": []},
    }
    files = {
        "json": (None, json.dumps(spec)),
        "file": ("f.zip", buffer.getvalue()),
        "description": ("d.md", b"# d"),
    }
    response = requests.post(f"{org.url}/function/", files=files, headers=_headers(org), timeout=10)
    assert response.status_code == 400
    assert response.json() == {
        "detail": [{"file": ["Ensure your archive contains a Dockerfile."]}],
        "key": "(not computed)",
    }


def test_bulk_create_errors(org: NodeOrganization) -> None:
    plan_key = _new_plan(org).json()["key"]
    url = f"{org.url}/task/bulk_create/"
    unknown_plan = requests.post(
        url,
        json={"tasks": [{"key": str(uuid.uuid4()), "compute_plan_key": str(uuid.uuid4())}]},
        headers=_headers(org),
        timeout=10,
    )
    assert unknown_plan.status_code == 400 and unknown_plan.json() == {"detail": "Invalid compute plan key"}
    mixed = requests.post(
        url,
        json={
            "tasks": [
                {"key": str(uuid.uuid4()), "compute_plan_key": plan_key},
                {"key": str(uuid.uuid4()), "compute_plan_key": str(uuid.uuid4())},
            ]
        },
        headers=_headers(org),
        timeout=10,
    )
    assert mixed.json() == {"detail": "All tasks should have the same compute plan key"}
    no_tasks = requests.post(url, json={}, headers=_headers(org), timeout=10)
    assert no_tasks.status_code == 500


def test_missing_trailing_slash_is_a_permanent_redirect_even_for_a_post(org: NodeOrganization) -> None:
    """Production Django (DEBUG=False) redirects every method; requests follows a POST's 301 with a GET."""
    get = requests.get(f"{org.url}/compute_plan", headers=_headers(org), allow_redirects=False, timeout=10)
    assert get.status_code == 301 and get.headers["Location"].endswith("/compute_plan/")
    post = requests.post(f"{org.url}/compute_plan", json={}, headers=_headers(org), allow_redirects=False, timeout=10)
    assert post.status_code == 301 and post.headers["Location"].endswith("/compute_plan/")
    body = {"key": str(uuid.uuid4())}
    followed = requests.post(f"{org.url}/compute_plan", json=body, headers=_headers(org), timeout=10)
    assert followed.status_code == 200 and "results" in followed.json()  # a list, not a created plan


def test_plan_list_pagination_and_last_value_wins(org: NodeOrganization) -> None:
    tag = f"page-{uuid.uuid4().hex[:8]}"
    keys = sorted(_new_plan(org, tag=tag).json()["key"] for _ in range(12))
    first = requests.get(f"{org.url}/compute_plan/", params={"tag": tag}, headers=_headers(org), timeout=10).json()
    assert first["count"] == 12 and len(first["results"]) == 10  # plans default to 10 a page
    assert first["next"].startswith(org.url) and first["previous"] is None
    second = requests.get(first["next"], headers=_headers(org), timeout=10).json()
    assert len(second["results"]) == 2 and second["next"] is None
    assert sorted(p["key"] for p in first["results"] + second["results"]) == keys
    # repeated parameters: the last value wins, as in Django
    url = f"{org.url}/compute_plan/?tag=nothing-has-this-tag&tag={tag}&page_size=5"
    assert requests.get(url, headers=_headers(org), timeout=10).json()["count"] == 12
    past_end = requests.get(
        f"{org.url}/compute_plan/", params={"tag": tag, "page": 9}, headers=_headers(org), timeout=10
    )
    assert past_end.status_code == 404 and past_end.json() == {"detail": "Invalid page."}
    unknown_filter = requests.get(
        f"{org.url}/compute_plan/", params={"worker": "nobody", "tag": tag}, headers=_headers(org), timeout=10
    )
    assert unknown_filter.json()["count"] == 12  # unknown filters are ignored
    bad_status = requests.get(f"{org.url}/compute_plan/", params={"status": "DONE"}, headers=_headers(org), timeout=10)
    assert bad_status.status_code == 400 and "status" in bad_status.json()


def test_plan_shape_and_ordering(org: NodeOrganization) -> None:
    tag = f"order-{uuid.uuid4().hex[:8]}"
    for name in ("b plan", "a plan", "c plan"):
        _new_plan(org, tag=tag, name=name, metadata={"epochs": str(len(name))})
    listed = requests.get(
        f"{org.url}/compute_plan/",
        params={"tag": tag, "ordering": "-name"},
        headers=_headers(org),
        timeout=10,
    ).json()["results"]
    assert [p["name"] for p in listed] == ["c plan", "b plan", "a plan"]
    plan = listed[0]
    assert plan["status"] == "PLAN_STATUS_CREATED" and plan["task_count"] == 0 and plan["duration"] == 0
    assert plan["creator"] == org.username and plan["owner"] == org.organization_id
    assert "estimated_end_date" not in plan
    meta = json.dumps([{"key": "epochs", "type": "is", "value": "6"}])
    matched = requests.get(
        f"{org.url}/compute_plan/", params={"tag": tag, "metadata": meta}, headers=_headers(org), timeout=10
    ).json()
    assert matched["count"] == 3
    matched = requests.get(
        f"{org.url}/compute_plan/", params={"match": "a plan"}, headers=_headers(org), timeout=10
    ).json()
    assert all("a" in p["name"] and "plan" in p["name"] for p in matched["results"])


def test_performances_of_unknown_plan_are_empty(org: NodeOrganization) -> None:
    response = requests.get(f"{org.url}/compute_plan/{uuid.uuid4()}/perf/", headers=_headers(org), timeout=10)
    assert response.status_code == 200
    assert response.json() == {
        "results": [],
        "compute_plan_statistics": {
            "compute_tasks_distinct_ranks": None,
            "compute_tasks_distinct_rounds": None,
        },
    }


def test_cancel_unknown_plan_is_404(org: NodeOrganization) -> None:
    response = requests.post(f"{org.url}/compute_plan/{uuid.uuid4()}/cancel/", headers=_headers(org), timeout=10)
    assert response.status_code == 404


@pytest.fixture(scope="module")
def noop_function(local_node: LocalNode, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A noop function of org-1 (set up through the client; the tests below speak raw HTTP)."""
    from substra_flows import SubstraClient
    from tests.cassette import function_spec

    org = local_node.organizations[0]
    with SubstraClient(url=org.url, token=org.token) as client:
        return client.add_function(function_spec("noop", tmp_path_factory.mktemp("api-noop"), title="api test noop"))


def _noop_chain(org: NodeOrganization, plan_key: str, function_key: str, length: int) -> list[dict[str, Any]]:
    """Wire-shaped tasks, each reading the previous one's model."""
    keys = [str(uuid.uuid4()) for _ in range(length)]
    return [
        {
            "key": key,
            "function_key": function_key,
            "compute_plan_key": plan_key,
            "worker": org.organization_id,
            "rank": None,
            "tag": None,
            "metadata": None,
            "inputs": []
            if i == 0
            else [
                {
                    "identifier": "model",
                    "asset_key": None,
                    "parent_task_key": keys[i - 1],
                    "parent_task_output_identifier": "model",
                }
            ],
            "outputs": {"model": {"permissions": {"public": True, "authorized_ids": []}, "transient": False}},
        }
        for i, key in enumerate(keys)
    ]


def _plan_tasks(org: NodeOrganization, plan_key: str) -> list[dict[str, Any]]:
    url = f"{org.url}/task/?compute_plan_key={plan_key}&page_size=1000"
    return requests.get(url, headers=_headers(org), timeout=10).json()["results"]


def test_bulk_create_is_all_or_nothing(org: NodeOrganization, noop_function: str) -> None:
    plan_key = _new_plan(org).json()["key"]
    valid, invalid = _noop_chain(org, plan_key, noop_function, 2)
    invalid = {**invalid, "function_key": str(uuid.uuid4())}  # an unknown function: refused
    refused = requests.post(
        f"{org.url}/task/bulk_create/", json={"tasks": [valid, invalid]}, headers=_headers(org), timeout=10
    )
    assert refused.status_code == 404 and invalid["function_key"] in json.dumps(refused.json())  # OE0002: NotFound
    assert _plan_tasks(org, plan_key) == []  # the valid task was not registered either
    batch = _noop_chain(org, plan_key, noop_function, 2)
    accepted = requests.post(f"{org.url}/task/bulk_create/", json={"tasks": batch}, headers=_headers(org), timeout=10)
    assert accepted.status_code == 200 and [t["key"] for t in accepted.json()] == [t["key"] for t in batch]
    again = requests.post(
        f"{org.url}/task/bulk_create/",
        json={"tasks": [*_noop_chain(org, plan_key, noop_function, 1), batch[0]]},  # one new task, one duplicate
        headers=_headers(org),
        timeout=10,
    )
    assert again.status_code == 409
    assert len(_plan_tasks(org, plan_key)) == 2  # the new task of the refused batch was not registered


def test_tasks_wait_right_after_bulk_create_then_run_in_the_background(
    org: NodeOrganization, noop_function: str
) -> None:
    plan_key = _new_plan(org).json()["key"]
    chain = _noop_chain(org, plan_key, noop_function, 6)
    created = requests.post(f"{org.url}/task/bulk_create/", json={"tasks": chain}, headers=_headers(org), timeout=10)
    assert created.status_code == 200
    by_key = {t["key"]: t for t in _plan_tasks(org, plan_key)}
    last = by_key[chain[-1]["key"]]
    waiting = ("STATUS_WAITING_FOR_BUILDER_SLOT", "STATUS_BUILDING", "STATUS_WAITING_FOR_PARENT_TASKS")
    assert last["status"] in waiting and last["rank"] == 5  # the function may still be building
    plan = requests.get(f"{org.url}/compute_plan/{plan_key}/", headers=_headers(org), timeout=10).json()
    assert (
        plan["task_count"] == 6
        and plan["done_count"] < 6
        and plan["status"] in ("PLAN_STATUS_CREATED", "PLAN_STATUS_DOING")
    )
    deadline = time.monotonic() + 60
    while plan["status"] != "PLAN_STATUS_DONE" and time.monotonic() < deadline:
        time.sleep(0.1)
        plan = requests.get(f"{org.url}/compute_plan/{plan_key}/", headers=_headers(org), timeout=10).json()
    assert plan["status"] == "PLAN_STATUS_DONE" and plan["done_count"] == 6 and plan["end_date"]
