"""``leaderboard(objective_key, sort)``: the 0.x board, scored from 1.0 performances.

0.x ranked the *certified* testtuples of an objective (run on the objective's own test dataset
and samples) that were done, by their score. Here the scores come from the performances of every
compute plan that used the objective's metric function (``GET /compute_plan/{key}/perf/``), and
the testtuple fields from the test tasks' metadata. Equal scores are ordered by testtuple key, so
the board is the same on every call.
"""

from __future__ import annotations

from typing import Any

from substra_flows import SubstraClient
from substra_flows.legacy import metadata, views
from substra_flows.legacy.catalog import Catalog
from substra_flows.legacy.exceptions import LegacyTranslationError
from substra_flows.legacy.reads import TupleReader

SORTS = ("desc", "asc")


def leaderboard(client: SubstraClient, catalog: Catalog, objective_key: str, sort: str = "desc") -> dict[str, Any]:
    """``{"objective": <objective>, "testtuples": [{algo, creator, key, traintuple_key, perf, tag}]}``."""
    if sort not in SORTS:
        raise LegacyTranslationError.for_field("sort", sort, "must be 'desc' (highest score first) or 'asc'")
    function = catalog.function(objective_key, (metadata.OBJECTIVE,), "objective_key")
    test_dataset = function.metadata.get(metadata.TEST_DATASET)
    worker = catalog.dataset_model(test_dataset).owner if test_dataset else None
    scores: dict[str, float] = {}
    for plan in client.list_compute_plan(filters={"function_key": function.key}):
        for row in client.get_performances(plan.key).rows():
            if row["performance"] is not None:
                scores[row["task_key"]] = row["performance"]
    reader = TupleReader(client, catalog)
    tests = [
        t
        for t in reader.tasks_of_kind(metadata.TESTTUPLE, {"function_key": function.key})
        if metadata.is_true(t.metadata, metadata.CERTIFIED) and t.key in scores
    ]
    parent_keys = [t.metadata.get(metadata.TRAINTUPLE_KEY, "") for t in tests]
    reader.load_tasks(k for k in parent_keys if k)
    board: list[dict[str, Any]] = []
    for test, parent_key in zip(tests, parent_keys, strict=True):
        parent = reader.cached_task(parent_key)
        algo = views.algo_ref(parent.function if parent else None)
        board.append(
            {
                "algo": {k: algo[k] for k in ("key", "name", "hash", "storage_address")},
                "creator": test.owner,
                "key": test.key,
                "traintuple_key": parent_key,
                "perf": scores[test.key],
                "tag": test.tag,
            }
        )
    board.sort(key=lambda row: row["key"])
    board.sort(key=lambda row: row["perf"], reverse=sort == "desc")
    return {"objective": views.objective_view(function, worker), "testtuples": board}
