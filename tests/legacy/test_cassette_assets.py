"""Cassettes of the 0.x surface: algos (three kinds), objectives, datasets, data samples, nodes.

Every method, its answer in the 0.x shape, its exist_ok / AlreadyExists behaviour and its main
error path, replayed from traffic recorded against the local node (scripts/record-cassettes
tests/legacy/test_cassette_assets.py).
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import pytest

from substra_flows import exceptions as exc
from substra_flows.legacy import Client
from substra_flows.legacy.exceptions import LegacyTranslationError
from tests.cassette import RequestLog, setup_cassette, sha256, unknown_key
from tests.legacy import _world
from tests.legacy.conftest import legacy_client
from tests.recording import Target, recording

pytestmark = [pytest.mark.vcr, pytest.mark.cassette]

V = "legacy-assets"
KINDS = ("algo", "aggregate_algo", "composite_algo")


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest, org1: Target, org2: Target, workdir: Path) -> dict[str, Any]:
    """A dataset per organization with samples, an objective on org1's test data, an algo of each kind."""
    ids = [org1.organization_id, org2.organization_id]
    with setup_cassette(request):
        client1, client2 = legacy_client(org1), legacy_client(org2)
        data1 = _world.register_org(client1, workdir, V, 0, ids)
        data2 = _world.register_org(client2, workdir, V, 1, ids)
        objective = client1.add_objective(_world.objective_data(workdir, V, data1["dataset"], data1["test"]))
        algos = {
            "algo": client1.add_algo(_world.algo_data("algo", workdir, V)),
            "aggregate_algo": client1.add_aggregate_algo(_world.algo_data("aggregate_algo", workdir, V)),
            "composite_algo": client1.add_composite_algo(_world.algo_data("composite_algo", workdir, V)),
        }
        client1.close()
        client2.close()
    return {"org1": data1, "org2": data2, "objective": objective, "algos": algos}


def add(client: Client, kind: str, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return getattr(client, f"add_{kind}")(data, **kwargs)


# -- algos ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_get_algo_of_each_kind(client1: Client, org1: Target, world: dict, workdir: Path, kind: str):
    algo = getattr(client1, f"get_{kind}")(world["algos"][kind]["key"])
    assert algo == world["algos"][kind]
    assert algo["name"] == f"{V} {kind.replace('_', ' ')}" and algo["owner"] == org1.organization_id
    assert algo["permissions"] == {"process": {"public": True, "authorized_ids": []}}
    assert set(algo) == {"key", "name", "content", "description", "owner", "permissions", "metadata"}
    described = sha256(Path(_world.algo_data(kind, workdir, V)["description"]))
    assert algo["description"]["hash"] == described


@pytest.mark.parametrize("kind", KINDS)
def test_add_algo_again_is_already_exists_or_the_existing_one(client1: Client, world: dict, workdir: Path, kind: str):
    data = _world.algo_data(kind, workdir, V, name="another name, same archive")
    with pytest.raises(exc.AlreadyExists) as raised:
        add(client1, kind, data)
    assert raised.value.key == world["algos"][kind]["key"]
    log = RequestLog(client1.backend)
    assert add(client1, kind, data, exist_ok=True) == world["algos"][kind]
    assert log.count("POST", "/function/") == 0


def test_add_algo_registers_a_train_and_a_predict_function(client1: Client, workdir: Path, tmp_path: Path):
    log = RequestLog(client1.backend)
    algo = client1.add_algo(_world.algo_data("algo", workdir, f"{V} new"))
    assert log.count("POST", "/function/") == 2
    function = client1.backend.get_function(algo["key"])
    assert [i.identifier for i in function.inputs] == ["opener", "datasamples", "models"]
    assert [o.identifier for o in function.outputs] == ["model"]
    predict = client1.backend.get_function(function.metadata["legacy_predict_key"])
    assert [o.identifier for o in predict.outputs] == ["predictions"]
    path = client1.download_algo(algo["key"], tmp_path)
    with tarfile.open(path) as archive:
        dockerfile = archive.extractfile("Dockerfile").read().decode()  # type: ignore[union-attr]
    assert '"--function-name", "train"' in dockerfile


def test_add_algo_with_an_entrypoint_1_0_cannot_run_is_refused_before_any_request(client1: Client, tmp_path: Path):
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        dockerfile = tmp_path / "Dockerfile"
        dockerfile.write_text("FROM python\nENTRYPOINT python3 algo.py\n")
        tar.add(dockerfile, arcname="Dockerfile")
    data = {**_world.algo_data("algo", tmp_path, f"{V} bad"), "file": str(archive)}
    log = RequestLog(client1.backend)
    with pytest.raises(LegacyTranslationError) as raised:
        client1.add_algo(data)
    assert log.calls == []
    assert raised.value.field == "add_algo.file:Dockerfile" and "exec form" in str(raised.value)


def test_list_algo_with_filters(client1: Client, world: dict):
    listed = client1.list_algo()
    assert world["algos"]["algo"] in listed
    assert all(a["key"] != world["algos"]["composite_algo"]["key"] for a in listed)  # one kind per list
    named = client1.list_algo(filters=[f"algo:name:{V} algo"])
    assert [a["key"] for a in named] == [world["algos"]["algo"]["key"]]
    assert client1.list_aggregate_algo(filters=[f"algo:key:{world['algos']['aggregate_algo']['key']}"]) == [
        world["algos"]["aggregate_algo"]
    ]
    groups = client1.list_composite_algo(
        filters=[f"algo:name:{V} composite algo", "OR", "algo:name:nothing"], is_complex=True
    )
    assert groups == [[world["algos"]["composite_algo"]], []]


def test_list_algo_with_an_unknown_filter_is_an_invalid_request(client1: Client):
    with pytest.raises(exc.InvalidRequest, match="algo has no field 'colour'"):
        client1.list_algo(filters=["algo:colour:blue"])


def test_get_algo_of_another_kind_is_not_found(client1: Client, world: dict):
    with pytest.raises(exc.NotFound) as raised:
        client1.get_algo(world["algos"]["composite_algo"]["key"])
    assert "it is a 0.x composite algo" in str(raised.value)
    with pytest.raises(exc.NotFound):
        client1.get_aggregate_algo(unknown_key(V, "aggregate"))


@pytest.mark.parametrize("kind", KINDS)
def test_describe_and_download_each_kind(client1: Client, world: dict, workdir: Path, tmp_path: Path, kind: str):
    key = world["algos"][kind]["key"]
    text = getattr(client1, f"describe_{kind}")(key)
    assert text == Path(_world.algo_data(kind, workdir, V)["description"]).read_text()
    path = Path(getattr(client1, f"download_{kind}")(key, tmp_path))
    assert sha256(path) == world["algos"][kind]["content"]["hash"]


def test_describe_and_download_of_unknown_keys(client1: Client, world: dict, tmp_path: Path):
    with pytest.raises(exc.NotFound):
        client1.describe_algo(unknown_key(V, "describe"))
    with pytest.raises(exc.NotFound, match="no objective"):
        client1.download_objective(world["algos"]["algo"]["key"], tmp_path)
    with pytest.raises(exc.NotFound):
        client1.download_dataset(unknown_key(V, "download"), tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- objectives -------------------------------------------------------------------------------------------


def test_get_objective_holds_its_test_data(client1: Client, org1: Target, world: dict):
    objective = client1.get_objective(world["objective"]["key"])
    assert objective == world["objective"]
    assert objective["test_dataset"] == {
        "data_manager_key": world["org1"]["dataset"],
        "data_sample_keys": world["org1"]["test"],
        "metadata": {},
        "worker": org1.organization_id,
    }
    assert objective["metrics"]["name"] == "accuracy"


def test_add_objective_again(client1: Client, world: dict, workdir: Path):
    data = _world.objective_data(workdir, V, world["org1"]["dataset"], world["org1"]["test"])
    with pytest.raises(exc.AlreadyExists) as raised:
        client1.add_objective({**data, "name": "same description"})
    assert raised.value.key == world["objective"]["key"]
    assert client1.add_objective(data, exist_ok=True) == world["objective"]


def test_add_objective_on_an_unknown_test_dataset(client1: Client, workdir: Path):
    data = _world.objective_data(workdir, f"{V} orphan", unknown_key(V, "dataset"), [unknown_key(V, "sample")])
    with pytest.raises(exc.NotFound) as raised:
        client1.add_objective(data)
    assert "add_objective.test_data_manager_key" in str(raised.value)


def test_list_describe_download_objective(client1: Client, world: dict, workdir: Path, tmp_path: Path):
    assert world["objective"] in client1.list_objective()
    assert client1.list_objective(filters=[f"objective:name:{V} accuracy"]) == [world["objective"]]
    text = client1.describe_objective(world["objective"]["key"])
    assert text == Path(_world.objective_data(workdir, V)["description"]).read_text()
    metrics = Path(client1.download_objective(world["objective"]["key"], tmp_path))
    assert sha256(metrics) == world["objective"]["metrics"]["hash"]


def test_get_objective_of_an_algo_key_is_not_found(client1: Client, world: dict):
    with pytest.raises(exc.NotFound, match="no objective"):
        client1.get_objective(world["algos"]["algo"]["key"])


# -- datasets ---------------------------------------------------------------------------------------------


def test_get_dataset_splits_train_and_test_samples(client1: Client, org1: Target, world: dict):
    dataset = client1.get_dataset(world["org1"]["dataset"])
    assert dataset["owner"] == org1.organization_id and dataset["type"] == "csv"
    assert sorted(dataset["train_data_sample_keys"]) == world["org1"]["train"]
    assert dataset["test_data_sample_keys"] == world["org1"]["test"]
    assert dataset["metadata"] == {}


def test_add_dataset_again(client1: Client, org1: Target, org2: Target, world: dict, workdir: Path):
    data = _world.dataset_data(workdir, V, f"{V} data 0", [org1.organization_id, org2.organization_id])
    with pytest.raises(exc.AlreadyExists) as raised:
        client1.add_dataset({**data, "name": "same opener"})
    assert raised.value.key == world["org1"]["dataset"]
    assert client1.add_dataset(data, exist_ok=True)["key"] == world["org1"]["dataset"]


def test_add_dataset_with_its_objective_and_metadata(client1: Client, org1: Target, world: dict, workdir: Path):
    data = _world.dataset_data(
        workdir, V, f"{V} with objective", [org1.organization_id], objective_key=world["objective"]["key"]
    )
    dataset = client1.add_dataset({**data, "metadata": {"source": "cassette"}})
    assert dataset["objective_key"] == world["objective"]["key"] and dataset["metadata"] == {"source": "cassette"}
    assert dataset["train_data_sample_keys"] == [] and dataset["test_data_sample_keys"] == []


def test_add_dataset_with_a_0x_field_misspelt_sends_nothing(client1: Client, org1: Target, workdir: Path):
    data = _world.dataset_data(workdir, V, f"{V} misspelt", [org1.organization_id])
    data["objectiveKey"] = data.pop("type")
    log = RequestLog(client1.backend)
    with pytest.raises(exc.SpecValidationError) as raised:
        client1.add_dataset(data)
    assert log.calls == []
    assert "add_dataset.objectiveKey" in str(raised.value) and "add_dataset.type" in str(raised.value)


def test_list_describe_download_dataset(client1: Client, world: dict, workdir: Path, tmp_path: Path):
    listed = client1.list_dataset(filters=[f"dataset:key:{world['org1']['dataset']}"])
    assert [d["key"] for d in listed] == [world["org1"]["dataset"]]
    assert "train_data_sample_keys" not in listed[0]  # the 0.x list shape
    text = client1.describe_dataset(world["org1"]["dataset"])
    assert text.startswith(f"# {V} data 0")
    opener = Path(client1.download_dataset(world["org1"]["dataset"], tmp_path))
    assert (
        opener.name == "opener.py" and sha256(opener) == client1.get_dataset(world["org1"]["dataset"])["opener"]["hash"]
    )


def test_get_dataset_of_an_unknown_key(client1: Client):
    with pytest.raises(exc.NotFound):
        client1.get_dataset(unknown_key(V, "get dataset"))


def test_link_dataset_with_objective_then_again_with_another(
    client1: Client, client2: Client, world: dict, workdir: Path, org1: Target
):
    linked = client2.link_dataset_with_objective(world["org2"]["dataset"], world["objective"]["key"])
    assert linked["objective_key"] == world["objective"]["key"]
    assert client1.get_dataset(world["org2"]["dataset"])["objective_key"] == world["objective"]["key"]
    assert client2.link_dataset_with_objective(world["org2"]["dataset"], world["objective"]["key"]) == linked
    other = client1.add_objective(_world.objective_data(workdir, f"{V} second"))
    with pytest.raises(exc.InvalidRequest, match="already associated with objective"):
        client2.update_dataset(world["org2"]["dataset"], {"objective_key": other["key"]})


def test_update_dataset_can_only_set_the_objective(client1: Client, world: dict):
    with pytest.raises(LegacyTranslationError) as raised:
        client1.update_dataset(world["org1"]["dataset"], {"name": "renamed"})
    assert raised.value.field == "update_dataset.data"


# -- data samples -----------------------------------------------------------------------------------------


def test_add_data_sample_again(client1: Client, world: dict, workdir: Path):
    folder = _world.samples(workdir, V, 0, "test", 1)[0]
    data = {"path": folder, "data_manager_keys": [world["org1"]["dataset"]], "test_only": True}
    with pytest.raises(exc.AlreadyExists) as raised:
        client1.add_data_sample(data)
    assert raised.value.key == world["org1"]["test"][0]
    log = RequestLog(client1.backend)
    found = client1.add_data_sample(data, exist_ok=True)
    assert found["key"] == world["org1"]["test"][0] and found["test_only"] is True
    assert log.count("POST", "/data_sample/") == 0


def test_add_data_samples_when_one_content_exists(client1: Client, world: dict, workdir: Path):
    folders = [*_world.samples(workdir, V, 0, "train", 2), *_world.samples(workdir, V, 0, "train", 1, seed=7)]
    with pytest.raises(exc.AlreadyExists) as raised:
        client1.add_data_samples({"paths": folders, "data_manager_keys": [world["org1"]["dataset"]]})
    assert sorted(raised.value.key) == world["org1"]["train"]


def test_add_data_samples_then_link_them_to_another_dataset(client1: Client, org1: Target, world: dict, workdir: Path):
    folders = _world.samples(workdir, V, 0, "train", 2, seed=3)
    added = client1.add_data_samples({"paths": folders, "data_manager_keys": [world["org1"]["dataset"]]})
    assert [s["test_only"] for s in added] == [False, False] and all(s["owner"] == org1.organization_id for s in added)
    target = client1.add_dataset(_world.dataset_data(workdir, V, f"{V} linked", [org1.organization_id]))
    linked = client1.link_dataset_with_data_samples(target["key"], [s["key"] for s in added])
    assert sorted(s["key"] for s in linked) == sorted(s["key"] for s in added)
    assert all(target["key"] in s["data_manager_keys"] for s in linked)
    assert sorted(client1.get_dataset(target["key"])["train_data_sample_keys"]) == sorted(s["key"] for s in added)


def test_add_data_sample_from_a_missing_folder(client1: Client, world: dict, tmp_path: Path):
    with pytest.raises(LegacyTranslationError) as raised:
        client1.add_data_sample({"path": str(tmp_path / "absent"), "data_manager_keys": [world["org1"]["dataset"]]})
    assert raised.value.field == "path"


def test_link_dataset_with_unknown_data_samples(client1: Client, world: dict):
    with pytest.raises((exc.InvalidRequest, exc.NotFound)):
        client1.link_dataset_with_data_samples(world["org1"]["dataset"], [unknown_key(V, "sample")])


def test_list_data_sample_with_filters(client1: Client, world: dict):
    test_only = client1.list_data_sample(filters=["data_sample:test_only:true"])
    assert set(world["org1"]["test"]) | set(world["org2"]["test"]) <= {s["key"] for s in test_only}
    assert not set(world["org1"]["train"]) & {s["key"] for s in test_only}
    mine = client1.list_data_sample(filters=[f"data_sample:data_manager_keys:{world['org2']['dataset']}"])
    assert {s["key"] for s in mine} == set(world["org2"]["train"]) | set(world["org2"]["test"])


# -- nodes ------------------------------------------------------------------------------------------------


def test_list_node(client1: Client, client2: Client, org1: Target, org2: Target):
    assert client1.list_node() == [
        {"id": org1.organization_id, "is_current": True},
        {"id": org2.organization_id, "is_current": False},
    ]
    assert [n["is_current"] for n in client2.list_node()] == [False, True]


def test_list_node_with_a_bad_token(org1: Target):
    client = Client(url=org1.url, token="0" * 40)
    with pytest.raises(exc.AuthenticationError):
        client.list_node()
    client.close()


def test_add_data_sample_by_server_path_then_again(client1: Client, org1: Target, world: dict, tmp_path: Path):
    if recording() and not org1.servermedias_root:
        pytest.skip("the target's servermedias root is unknown (set SUBSTRA_SERVERMEDIAS_ROOT to record this)")
    # request bodies are not matched on replay: any folder stands in for the node's media root
    root = Path(org1.servermedias_root) if recording() else tmp_path
    folder = _world.samples(root, V, 0, "train", 1, seed=11)[0]
    data = {"path": folder, "data_manager_keys": [world["org1"]["dataset"]]}
    added = client1.add_data_sample(data, local=False)
    assert added["data_manager_keys"] == [world["org1"]["dataset"]]
    assert client1.add_data_sample(data, local=False, exist_ok=True)["key"] == added["key"]
    with pytest.raises(exc.AlreadyExists):
        client1.add_data_sample(data, local=True)  # the same content, whichever way it travels
