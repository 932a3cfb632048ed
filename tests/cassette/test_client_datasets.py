"""Cassettes: datasets and data samples (add, link, rename, get, list, describe, download)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from examples import assets
from substra_flows import SubstraClient
from substra_flows import exceptions as exc
from substra_flows.client import GENERATED_DESCRIPTION
from tests.cassette import (
    RequestLog,
    client_for,
    dataset_spec,
    recording,
    setup_cassette,
    sha256,
    unknown_key,
)
from tests.recording import Target

pytestmark = [pytest.mark.vcr, pytest.mark.cassette]

LISTED = [f"cassette listing dataset {i}" for i in (1, 2, 3)]


def _description(title: str) -> str:
    return f"# {title}\n\nAn example asset of substra-flows.\n"


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest, org1: Target, org2: Target, workdir: Path) -> dict[str, Any]:
    """Datasets of both organizations and a few samples, registered once for the module."""
    with setup_cassette(request):
        client1, client2 = client_for(org1), client_for(org2)
        private = client1.add_dataset(dataset_spec("cassette private dataset", workdir))
        listed = [
            client1.add_dataset(dataset_spec(name, workdir, authorized_ids=[org2.organization_id])) for name in LISTED
        ]
        folders = assets.generate_samples(1, workdir / "listed-samples", n_samples=3)
        samples = client1.add_data_samples({"paths": folders, "data_manager_keys": [listed[0]]})
        renamed = client1.add_dataset(dataset_spec("cassette dataset to rename", workdir))
        other = client2.add_dataset(dataset_spec("cassette org2 dataset", workdir))
        other_folder = assets.generate_samples(2, workdir / "org2-samples", n_samples=1)[0]
        other_sample = client2.add_data_sample({"path": other_folder, "data_manager_keys": [other]})
        client1.close()
        client2.close()
    return {
        "private": private,
        "listed": listed,
        "samples": sorted(samples),
        "renamed": renamed,
        "other": other,
        "other_sample": other_sample,
    }


# -- add_dataset / get_dataset ----------------------------------------------------------------------


def test_add_dataset_then_get_it(client1: SubstraClient, org1: Target, org2: Target, workdir: Path) -> None:
    spec = dataset_spec(
        "cassette added dataset",
        workdir,
        authorized_ids=[org2.organization_id],
        logs_ids=[org1.organization_id],
        metadata={"source": "cassette"},
    )
    key = client1.add_dataset(spec)
    dataset = client1.get_dataset(key)
    assert dataset.key == key and dataset.name == "cassette added dataset"
    assert dataset.owner == org1.organization_id
    assert dataset.metadata == {"source": "cassette"}
    assert dataset.permissions.process.public is False
    assert set(dataset.permissions.process.authorized_ids) == {org1.organization_id, org2.organization_id}
    assert dataset.logs_permission is not None and dataset.logs_permission.authorized_ids == [org1.organization_id]
    assert dataset.opener.checksum == sha256(assets.opener_path())
    assert dataset.description.checksum == sha256(spec["description"])
    assert dataset.data_sample_keys == []


def test_add_dataset_without_description_sends_a_generated_one(client1: SubstraClient, workdir: Path) -> None:
    spec = dataset_spec("cassette dataset without description", workdir)
    del spec["description"]
    key = client1.add_dataset(spec)
    assert client1.describe_dataset(key) == GENERATED_DESCRIPTION.decode()


def test_add_dataset_for_an_unknown_organization_is_a_400(client1: SubstraClient, workdir: Path) -> None:
    spec = dataset_spec("cassette dataset for nobody", workdir, authorized_ids=["NoSuchOrgMSP"])
    with pytest.raises(exc.InvalidRequest) as raised:
        client1.add_dataset(spec)
    assert raised.value.status_code == 400
    assert "NoSuchOrgMSP" in str(raised.value)


def test_add_dataset_with_a_bad_spec_sends_nothing(client1: SubstraClient, workdir: Path) -> None:
    log = RequestLog(client1)
    spec = dataset_spec("cassette broken dataset", workdir)
    spec["data_opener"] = workdir / "no-such-opener.py"
    with pytest.raises(exc.SpecValidationError) as raised:
        client1.add_dataset(spec)
    assert raised.value.field == "data_opener"
    assert log.calls == []


def test_get_dataset_of_an_unknown_key_is_not_found(client1: SubstraClient) -> None:
    key = unknown_key("dataset")
    with pytest.raises(exc.NotFound) as raised:
        client1.get_dataset(key)
    assert raised.value.status_code == 404 and raised.value.key == key
    assert key in str(raised.value)


# -- data samples -----------------------------------------------------------------------------------


def test_add_data_sample_by_upload(client1: SubstraClient, org1: Target, world: dict, tmp_path: Path) -> None:
    folder = assets.generate_samples(1, tmp_path, split="test", n_samples=1, day=7)[0]
    key = client1.add_data_sample({"path": folder, "data_manager_keys": [world["private"]]})
    sample = client1.get_data_sample(key)
    assert sample.key == key and sample.owner == org1.organization_id
    assert sample.data_manager_keys == [world["private"]]
    assert key in client1.get_dataset(world["private"]).data_sample_keys


def test_add_data_sample_to_another_organizations_dataset_is_a_400(
    client1: SubstraClient, world: dict, tmp_path: Path
) -> None:
    folder = assets.generate_samples(1, tmp_path, n_samples=1, day=8)[0]
    with pytest.raises(exc.InvalidRequest) as raised:
        client1.add_data_sample({"path": folder, "data_manager_keys": [world["other"]]})
    assert raised.value.status_code == 400
    assert world["other"] in str(raised.value)


def test_add_data_sample_of_a_missing_folder_sends_nothing(client1: SubstraClient, world: dict, tmp_path: Path) -> None:
    log = RequestLog(client1)
    with pytest.raises(exc.LoadDataException) as raised:
        client1.add_data_sample({"path": tmp_path / "nothing-here", "data_manager_keys": [world["private"]]})
    assert raised.value.field == "path"
    assert log.calls == []


def test_add_data_sample_from_a_server_path(client1: SubstraClient, org1: Target, world: dict, tmp_path: Path) -> None:
    if recording() and not org1.servermedias_root:
        pytest.skip("the target's servermedias root is unknown (set SUBSTRA_SERVERMEDIAS_ROOT to record this)")
    # request bodies are not matched on replay: any folder stands in for the node's media root
    root = Path(org1.servermedias_root) if recording() else tmp_path
    folder = assets.generate_samples(1, root / "cassette-server-path", split="test", n_samples=1, day=3)[0]
    key = client1.add_data_sample({"path": folder, "data_manager_keys": [world["private"]]}, local=False)
    assert client1.get_data_sample(key).data_manager_keys == [world["private"]]

    outside = assets.generate_samples(1, tmp_path / "outside", n_samples=1, day=4)[0]
    with pytest.raises(exc.InvalidRequest) as raised:
        client1.add_data_sample({"path": outside, "data_manager_keys": [world["private"]]}, local=False)
    assert raised.value.status_code == 400
    assert "Path" in str(raised.value)


def test_add_data_samples(client1: SubstraClient, org1: Target, world: dict, tmp_path: Path) -> None:
    folders = assets.generate_samples(1, tmp_path, n_samples=2, day=5)
    log = RequestLog(client1)
    keys = client1.add_data_samples({"paths": folders, "data_manager_keys": [world["private"]]})
    assert len(keys) == 2 and len(set(keys)) == 2
    assert log.count("POST", "/data_sample/") == 1  # one request for both folders
    listed = client1.list_data_sample(filters={"key": keys})
    assert sorted(s.key for s in listed) == sorted(keys)
    assert all(s.owner == org1.organization_id and s.data_manager_keys == [world["private"]] for s in listed)


def test_add_data_samples_for_an_unknown_dataset_is_a_400(client1: SubstraClient, tmp_path: Path) -> None:
    folders = assets.generate_samples(1, tmp_path, n_samples=2, day=6)
    with pytest.raises(exc.InvalidRequest) as raised:
        client1.add_data_samples({"paths": folders, "data_manager_keys": [unknown_key("dataset", "samples")]})
    assert raised.value.status_code == 400


def test_get_data_sample_of_an_unknown_key_is_not_found(client1: SubstraClient) -> None:
    with pytest.raises(exc.NotFound):
        client1.get_data_sample(unknown_key("data sample"))


def test_link_dataset_with_data_samples(client1: SubstraClient, world: dict) -> None:
    sample, target = world["samples"][0], world["listed"][1]
    assert client1.link_dataset_with_data_samples(target, [sample]) == [sample]
    assert client1.link_dataset_with_data_samples(target, [sample]) == [sample]  # links merge: safe to repeat
    assert sample in client1.get_dataset(target).data_sample_keys
    assert set(client1.get_data_sample(sample).data_manager_keys) == {world["listed"][0], target}


def test_link_to_another_organizations_dataset_is_forbidden(client2: SubstraClient, world: dict) -> None:
    with pytest.raises(exc.AuthorizationError) as raised:
        client2.link_dataset_with_data_samples(world["private"], [world["other_sample"]])
    assert raised.value.status_code == 403


def test_link_an_unknown_sample_is_a_400(client1: SubstraClient, world: dict) -> None:
    with pytest.raises(exc.InvalidRequest) as raised:
        client1.link_dataset_with_data_samples(world["private"], [unknown_key("data sample", "link")])
    assert raised.value.status_code == 400


# -- update_dataset ---------------------------------------------------------------------------------


def test_update_dataset(client1: SubstraClient, world: dict) -> None:
    client1.update_dataset(world["renamed"], "cassette dataset renamed")
    assert client1.get_dataset(world["renamed"]).name == "cassette dataset renamed"


def test_update_dataset_errors(client1: SubstraClient, client2: SubstraClient, world: dict) -> None:
    with pytest.raises(exc.NotFound):
        client1.update_dataset(unknown_key("dataset", "rename"), "whatever")
    with pytest.raises(exc.AuthorizationError) as forbidden:
        client2.update_dataset(world["renamed"], "not yours")
    assert forbidden.value.status_code == 403
    with pytest.raises(exc.InvalidRequest) as invalid:
        client1.update_dataset(world["renamed"], "   ")  # blank: the server refuses it
    assert invalid.value.status_code == 400
    assert isinstance(invalid.value.errors, dict) and "name" in invalid.value.errors
    assert "name:" in str(invalid.value)


# -- lists ------------------------------------------------------------------------------------------


def test_list_dataset_filters_order_and_pages(client1: SubstraClient, org2: Target, world: dict) -> None:
    keys = world["listed"]
    log = RequestLog(client1)
    ascending = client1.list_dataset(filters={"key": keys}, order_by="name", ascending=True, page_size=1)
    assert [d.name for d in ascending] == LISTED
    assert log.count("GET", "/data_manager/") == 3  # one page per dataset
    descending = client1.list_dataset(filters={"key": keys}, order_by="name", ascending=False)
    assert [d.name for d in descending] == LISTED[::-1]
    by_creation = client1.list_dataset(filters={"key": keys}, ascending=True)
    assert [d.key for d in by_creation] == keys
    assert set(keys) <= {d.key for d in client1.list_dataset(filters={"name": "cassette listing dataset"})}
    owned = client1.list_dataset(filters={"owner": [org2.organization_id], "key": [*keys, world["other"]]})
    assert [d.key for d in owned] == [world["other"]]
    with_sample = client1.list_dataset(filters={"data_sample_key": [world["samples"][2]]})
    assert [d.key for d in with_sample] == [keys[0]]


def test_list_dataset_refuses_bad_arguments_before_sending(client1: SubstraClient) -> None:
    log = RequestLog(client1)
    with pytest.raises(exc.NotAllowedFilterError):
        client1.list_dataset(filters={"permissions": ["x"]})
    with pytest.raises(exc.OrderingFormatError):
        client1.list_dataset(order_by="status")
    with pytest.raises(exc.SpecValidationError):
        client1.list_dataset(page_size=0)
    assert log.calls == []


def test_list_data_sample_filters_order_and_pages(client1: SubstraClient, org1: Target, world: dict) -> None:
    keys = world["samples"]
    log = RequestLog(client1)
    ordered = client1.list_data_sample(filters={"key": keys}, order_by="key", ascending=True, page_size=2)
    assert [s.key for s in ordered] == sorted(keys)
    assert log.count("GET", "/data_sample/") == 2
    newest_first = client1.list_data_sample(filters={"dataset_key": world["listed"][0]}, order_by="key")
    assert [s.key for s in newest_first] == sorted(keys, reverse=True)
    owned = client1.list_data_sample(filters={"owner": [org1.organization_id], "key": [*keys, world["other_sample"]]})
    assert sorted(s.key for s in owned) == keys
    with pytest.raises(exc.FilterFormatError):
        client1.list_data_sample(filters={"dataset_key": world["listed"][:2]})


# -- describe / download ----------------------------------------------------------------------------


def test_describe_dataset(client1: SubstraClient, world: dict) -> None:
    assert client1.describe_dataset(world["private"]) == _description("cassette private dataset")


def test_describe_dataset_errors(client1: SubstraClient, client2: SubstraClient, world: dict) -> None:
    with pytest.raises(exc.NotFound):
        client1.describe_dataset(unknown_key("dataset", "describe"))
    with pytest.raises(exc.AuthorizationError):
        client2.describe_dataset(world["private"])  # private to org1


def test_download_dataset(client1: SubstraClient, client2: SubstraClient, world: dict, tmp_path: Path) -> None:
    path = client1.download_dataset(world["private"], tmp_path / "org1")
    assert path.name == "opener.py"
    assert path.read_bytes() == assets.opener_path().read_bytes()
    shared = client2.download_dataset(world["listed"][0], tmp_path / "org2")  # shared with org2
    assert shared.read_bytes() == assets.opener_path().read_bytes()


def test_download_dataset_errors(client1: SubstraClient, client2: SubstraClient, world: dict, tmp_path: Path) -> None:
    with pytest.raises(exc.AuthorizationError) as raised:
        client2.download_dataset(world["private"], tmp_path)
    assert raised.value.status_code == 403
    with pytest.raises(exc.NotFound):
        client1.download_dataset(unknown_key("dataset", "download"), tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
