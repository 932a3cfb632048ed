"""Cassettes: functions (add, get, list, describe, download, rename, wait, and the async twins)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from examples import assets
from substra_flows import SubstraClient
from substra_flows import exceptions as exc
from substra_flows.models import AssetKind, FunctionStatus
from tests.cassette import RequestLog, client_for, function_spec, setup_cassette, sha256, unknown_key
from tests.recording import Target

pytestmark = [pytest.mark.vcr, pytest.mark.cassette]

# words no hex key contains: the server's "match" filter also searches keys
LISTED = ["cassette listing function alpha", "cassette listing function bravo", "cassette listing function charlie"]


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest, org1: Target, workdir: Path) -> dict[str, Any]:
    """Three public functions and one private to org1, registered once for the module."""
    with setup_cassette(request):
        client = client_for(org1)
        listed = [
            client.add_function(function_spec(name, workdir, title=title))
            for name, title in zip(("train", "predict", "score"), LISTED, strict=True)
        ]
        private = client.add_function(
            function_spec("aggregate", workdir, title="cassette private function", permissions={"public": False})
        )
        renamed = client.add_function(function_spec("noop", workdir, title="cassette function to rename"))
        client.close()
    return {"listed": listed, "private": private, "renamed": renamed}


def test_add_function_then_get_it(client1: SubstraClient, org1: Target, workdir: Path) -> None:
    spec = function_spec("train", workdir, title="cassette added function")
    spec["metadata"] = {"source": "cassette"}
    key = client1.add_function(spec)
    assert client1.get_function(key).status in (FunctionStatus.waiting, FunctionStatus.building)  # build phase
    function = client1.wait_function(key, timeout=60, polling_period=org1.polling_period)
    assert function.key == key and function.name == "cassette added function"
    assert function.owner == org1.organization_id
    assert function.metadata == {"source": "cassette"}
    assert function.permissions.process.public is True
    assert {i.identifier: (i.kind, i.optional, i.multiple) for i in function.inputs} == {
        "datasamples": (AssetKind.data_sample, False, True),
        "opener": (AssetKind.data_manager, False, False),
        "model": (AssetKind.model, True, False),
    }
    assert [(o.identifier, o.kind) for o in function.outputs] == [("model", AssetKind.model)]
    assert function.status is FunctionStatus.ready
    assert function.archive.checksum == sha256(spec["file"])
    assert function.description.checksum == sha256(spec["description"])


def test_add_function_for_an_unknown_organization_is_a_400(client1: SubstraClient, workdir: Path) -> None:
    spec = function_spec(
        "noop", workdir, title="cassette function for nobody", permissions={"public": False, "authorized_ids": ["X"]}
    )
    with pytest.raises(exc.InvalidRequest) as raised:
        client1.add_function(spec)
    assert raised.value.status_code == 400
    assert "unknown organizations" in str(raised.value)


def test_add_function_with_a_bad_spec_sends_nothing(client1: SubstraClient, workdir: Path) -> None:
    log = RequestLog(client1)
    spec = function_spec("noop", workdir, title="cassette broken function")
    spec["file"] = spec["description"]  # a markdown file is not an archive
    with pytest.raises(exc.LoadDataException) as raised:
        client1.add_function(spec)
    assert raised.value.field == "file"
    spec = function_spec("noop", workdir, title="cassette broken function")
    spec["outputs"] = [{"identifier": "perf", "kind": "ASSET_PERFORMANCE", "multiple": True}]
    with pytest.raises(exc.SpecValidationError) as invalid:
        client1.add_function(spec)
    assert invalid.value.field == "outputs.0"
    assert log.calls == []


def test_get_function_of_an_unknown_key_is_not_found(client1: SubstraClient) -> None:
    key = unknown_key("function")
    with pytest.raises(exc.NotFound) as raised:
        client1.get_function(key)
    assert raised.value.key == key and raised.value.status_code == 404


def test_list_function_filters_order_and_pages(client1: SubstraClient, org1: Target, world: dict) -> None:
    keys = world["listed"]
    log = RequestLog(client1)
    ascending = client1.list_function(filters={"key": keys}, order_by="name", ascending=True, page_size=2)
    assert [f.name for f in ascending] == LISTED
    assert log.count("GET", "/function/") == 2
    descending = client1.list_function(filters={"key": keys}, order_by="name")
    assert [f.name for f in descending] == LISTED[::-1]
    assert [f.key for f in client1.list_function(filters={"key": keys}, ascending=True)] == keys
    matched = client1.list_function(filters={"name": "function bravo"})
    assert [f.key for f in matched] == [keys[1]]
    owned = client1.list_function(filters={"owner": [org1.organization_id], "key": keys})
    assert len(owned) == 3
    with pytest.raises(exc.NotAllowedFilterError):
        client1.list_function(filters={"dataset_key": keys[0]})


def test_describe_function(client1: SubstraClient, world: dict) -> None:
    text = client1.describe_function(world["listed"][0])
    assert text == "# cassette listing function alpha\n\nAn example asset of substra-flows.\n"


def test_describe_function_errors(client1: SubstraClient, client2: SubstraClient, world: dict) -> None:
    with pytest.raises(exc.NotFound):
        client1.describe_function(unknown_key("function", "describe"))
    with pytest.raises(exc.AuthorizationError):
        client2.describe_function(world["private"])


def test_download_function(client1: SubstraClient, client2: SubstraClient, world: dict, tmp_path: Path) -> None:
    expected = assets.build_function_archive("train", tmp_path / "expected").read_bytes()
    path = client1.download_function(world["listed"][0], tmp_path / "org1")
    assert path.name == "function.tar.gz" and path.read_bytes() == expected
    public = client2.download_function(world["listed"][0], tmp_path / "org2")
    assert public.read_bytes() == expected
    private = client1.download_function(world["private"], tmp_path / "private")
    assert private.read_bytes() == assets.build_function_archive("aggregate", tmp_path / "agg").read_bytes()


def test_download_function_errors(client1: SubstraClient, client2: SubstraClient, world: dict, tmp_path: Path) -> None:
    with pytest.raises(exc.AuthorizationError) as raised:
        client2.download_function(world["private"], tmp_path)
    assert raised.value.status_code == 403
    with pytest.raises(exc.NotFound):
        client1.download_function(unknown_key("function", "download"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_update_function(client1: SubstraClient, world: dict) -> None:
    client1.update_function(world["renamed"], "cassette function renamed")
    assert client1.get_function(world["renamed"]).name == "cassette function renamed"


def test_update_function_errors(client1: SubstraClient, client2: SubstraClient, world: dict) -> None:
    with pytest.raises(exc.NotFound):
        client1.update_function(unknown_key("function", "rename"), "whatever")
    with pytest.raises(exc.AuthorizationError) as raised:
        client2.update_function(world["renamed"], "not yours")
    assert raised.value.status_code == 403
    with pytest.raises(exc.InvalidRequest) as invalid:
        client1.update_function(world["renamed"], "   ")
    assert "name" in invalid.value.errors


def test_wait_function(client1: SubstraClient, org1: Target, world: dict) -> None:
    function = client1.wait_function(world["listed"][0], timeout=60, polling_period=org1.polling_period)
    assert function.status is FunctionStatus.ready
    with pytest.raises(exc.NotFound):
        client1.wait_function(
            unknown_key("function", "wait"), timeout=60, polling_period=org1.polling_period, not_found_grace=0
        )


async def test_async_wait_function_and_get_function(client1: SubstraClient, org1: Target, world: dict) -> None:
    function = await client1.async_wait_function(world["listed"][1], timeout=60, polling_period=org1.polling_period)
    assert function.status is FunctionStatus.ready and function.name == LISTED[1]
    fetched = await client1.async_get_function(world["listed"][2])
    assert fetched.name == LISTED[2]
    with pytest.raises(exc.NotFound):
        await client1.async_get_function(unknown_key("function", "async get"))
    with pytest.raises(exc.NotFound):
        await client1.async_wait_function(
            unknown_key("function", "async"), polling_period=org1.polling_period, not_found_grace=0
        )
