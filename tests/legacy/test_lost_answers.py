"""A registration whose answer is lost is looked up by its 0.x identity before anything is resent."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from substra_flows import exceptions as exc
from substra_flows import models
from substra_flows.legacy.assets import AssetRegistry
from substra_flows.legacy.catalog import Catalog
from substra_flows.legacy.records import Records
from substra_flows.steps.fingerprints import file_sha256
from tests.legacy import _world

ORG = "MyOrg1MSP"


class FlakyServer:
    """Just the function routes of a client; the answers of the first ``lost`` creations are lost."""

    def __init__(self, lost: int, applied: bool) -> None:
        self.functions: list[models.Function] = []
        self.posts = 0
        self.lost = lost
        self.applied = applied  # whether a creation whose answer is lost was carried out anyway

    def list_function(self, filters: Any = None, order_by: Any = None, ascending: bool = False) -> list:
        owners = (filters or {}).get("owner")
        return [f for f in self.functions if not owners or f.owner in owners]

    def get_function(self, key: str) -> models.Function:
        for function in self.functions:
            if function.key == key:
                return function
        raise exc.NotFound(f"no function {key}", status_code=404)

    def add_function(self, spec: dict[str, Any]) -> str:
        self.posts += 1
        key = str(uuid.uuid4())
        lose = self.posts <= self.lost
        if not lose or self.applied:
            file = {"checksum": "c", "storage_address": f"http://node/function/{key}/file/"}
            self.functions.append(
                models.Function.model_validate(
                    {
                        "key": key,
                        "name": spec["name"],
                        "owner": ORG,
                        "permissions": {"process": spec["permissions"], "download": spec["permissions"]},
                        "metadata": spec["metadata"],
                        "description": file,
                        "archive": file,
                    }
                )
            )
        if lose:
            cause = exc.Timeout("read timed out", method="POST", url="/function/")
            raise exc.AssetMaybeCreatedError("POST /function/: answer lost", cause=cause, asset_type="function")
        return key


def registry(server: FlakyServer) -> AssetRegistry:
    client: Any = server
    return AssetRegistry(client, Catalog(client, Records(client)), Records(client), lambda: ORG)


def test_lost_answers_are_found_by_the_archive_not_registered_twice(tmp_path: Path):
    server = FlakyServer(lost=2, applied=True)  # both the predict and the train function answers are lost
    algo = registry(server).add_algo("algo", _world.algo_data("algo", tmp_path, "lost"), False, "add_algo")
    assert server.posts == 2 and len(server.functions) == 2
    train = server.get_function(algo["key"])
    assert train.metadata["legacy_kind"] == "algo"
    assert server.get_function(train.metadata["legacy_predict_key"]).metadata["legacy_kind"] == "predict"


def test_a_lost_creation_that_did_not_happen_is_not_resent(tmp_path: Path):
    server = FlakyServer(lost=1, applied=False)
    with pytest.raises(exc.AssetMaybeCreatedError):
        registry(server).add_algo("algo", _world.algo_data("algo", tmp_path, "lost"), False, "add_algo")
    assert server.posts == 1 and server.functions == []
    # the next attempt (a rerun) registers it, once
    algo = registry(server).add_algo("algo", _world.algo_data("algo", tmp_path, "lost"), False, "add_algo")
    assert server.posts == 3 and algo["key"] == server.functions[-1].key


def test_a_predict_function_left_by_an_interrupted_attempt_is_reused(tmp_path: Path):
    server = FlakyServer(lost=0, applied=True)
    data = _world.algo_data("aggregate_algo", tmp_path, "interrupted")
    # an earlier run registered the predict function, then stopped before the aggregate function
    leftover = registry(server)._register_function(
        "aggregate_algo",
        "predict",
        name="x (predict)",
        archive=Path(data["file"]),
        description=Path(data["description"]),
        permissions={"public": True, "authorized_ids": []},
        meta={
            "legacy_kind": "predict",
            "legacy_checksum": file_sha256(data["file"]),
            "legacy_predict_for": "aggregate_algo",
        },
        field="add_aggregate_algo.file",
    )
    algo = registry(server).add_algo("aggregate_algo", data, False, "add_aggregate_algo")
    assert server.posts == 2
    assert server.get_function(algo["key"]).metadata["legacy_predict_key"] == leftover
