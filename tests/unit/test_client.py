"""SubstraClient against the in-process fake: idempotent creation, uploads, lists, files, auth."""

from __future__ import annotations

import io
import json
import logging
import uuid
import zipfile
from urllib.parse import parse_qs

import pytest

from substra_flows import exceptions as exc
from substra_flows import models
from substra_flows.client import format_filters, format_ordering, implicit_plan_key, make_batches

from ._fakes import BASE, TOKEN, function_body, plan_body, task_body


def k() -> str:
    return str(uuid.uuid4())


FN = k()
PUBLIC = {"public": True, "authorized_ids": []}


def task(tid=None, *parents):
    return {
        "task_id": tid or k(),
        "function_key": FN,
        "worker": "MyOrg1MSP",
        "inputs": [
            {"identifier": "model", "parent_task_key": p, "parent_task_output_identifier": "model"} for p in parents
        ],
    }


def multipart_json(body: bytes) -> dict:
    start = body.index(b'name="json"')
    return json.loads(body[start:].split(b"\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0])


def multipart_file(body: bytes, part: str) -> bytes:
    start = body.index(f'name="{part}"'.encode())
    return body[start:].split(b"\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0]


# -- compute plans ----------------------------------------------------------------------------------


def test_bad_spec_sends_nothing(client, adapter):
    with pytest.raises(exc.SpecValidationError):
        client.add_compute_plan({"name": "p", "tasks": [{"task_id": "x", "function_key": FN, "worker": "o"}]})
    assert adapter.calls == []


def test_add_compute_plan_batches_parents_first(client, adapter, server):
    a, b, c = k(), k(), k()
    plan = client.add_compute_plan({"name": "p", "tasks": [task(c, b), task(b, a), task(a)]}, batch_size=2)
    assert plan.task_count == 3
    batches = [[t["key"] for t in call.json()["tasks"]] for call in adapter.calls if call.path == "/task/bulk_create/"]
    assert batches == [[a, b], [c]]
    assert all(
        call.json()["tasks"][0]["compute_plan_key"] == plan.key
        for call in adapter.calls
        if call.path == "/task/bulk_create/"
    )
    body = adapter.calls[0].json()
    assert set(body) == {"key", "name"}  # no tasks in the plan POST


def test_add_compute_plan_single_batch_without_auto_batching(client, adapter, server):
    client.add_compute_plan({"name": "p", "tasks": [task() for _ in range(7)]}, auto_batching=False, batch_size=2)
    assert adapter.paths("POST").count("/task/bulk_create/") == 1


def test_make_batches_validates_size():
    with pytest.raises(exc.SpecValidationError, match="batch_size"):
        make_batches([object()], True, 0)
    assert make_batches([], True, 10) == []


def test_rerun_with_same_key_reuses_plan_and_skips_applied_batches(client, adapter, server, caplog):
    key = k()
    spec = {"key": key, "name": "p", "tasks": [task() for _ in range(3)]}
    client.add_compute_plan(spec, batch_size=2)
    adapter.calls.clear()
    with caplog.at_level(logging.INFO, logger="substra_flows"):
        plan = client.add_compute_plan(spec, batch_size=2)
    assert plan.key == key and plan.task_count == 3
    assert len(server.tasks) == 3
    assert "already exists" in caplog.text and "already created" in caplog.text
    confirm = [c for c in adapter.calls if c.method == "GET" and c.path == "/task/"]
    assert len(confirm) == 2 and confirm[0].query["compute_plan_key"] == [key]


def test_submit_compute_plan_reports_created_and_found(client, server):
    a, b = k(), k()
    spec = {"name": "p", "tasks": [task(a), task(b, a)]}
    first = client.submit_compute_plan(spec, batch_size=1)
    assert first.created and first.added_task_keys == [a, b] and first.existing_task_keys == []
    spec["key"] = first.plan.key
    spec["tasks"].append(task(None, b))
    again = client.submit_compute_plan(spec, batch_size=1)
    assert not again.created and again.existing_task_keys == [a, b] and len(again.added_task_keys) == 1
    assert again.plan.task_count == 3


def test_lost_response_on_plan_post_then_409_is_success(client, adapter, server, sleeps):
    key = k()
    # first attempt: applied by the server, answer lost; second attempt: 409
    seen = []

    def handler(call, match):
        seen.append(1)
        reply = server.create_plan(call, match)
        return (504, {"detail": "deadline exceeded"}, {}) if len(seen) == 1 else reply

    adapter.route("POST", r"/compute_plan/", handler)
    plan = client.add_compute_plan({"key": key, "name": "p"})
    assert plan.key == key and len(seen) == 2 and len(server.plans) == 1
    assert adapter.paths("GET")[-1] == f"/compute_plan/{key}/"


def test_409_batch_with_foreign_keys_is_explained(client, adapter, server):
    other_plan = client.add_compute_plan({"name": "other", "tasks": [task()]})
    clash = next(iter(server.tasks))
    with pytest.raises(exc.AlreadyExists) as info:
        client.add_compute_plan({"name": "p", "tasks": [task(clash), task()]})
    assert "2 task keys of this batch are not in compute plan" in str(info.value) or "of the 2 task keys" in str(
        info.value
    )
    assert other_plan.key not in str(info.value)
    assert clash in info.value.key


def test_plan_exists_under_other_name_warns(client, server, caplog):
    key = k()
    server.plans[key] = plan_body(key, "original")
    with caplog.at_level(logging.WARNING, logger="substra_flows"):
        plan = client.add_compute_plan({"key": key, "name": "renamed"})
    assert plan.name == "original" and "another name" in caplog.text


def test_add_compute_plan_tasks_accepts_list_and_dict(client, adapter, server):
    plan = client.add_compute_plan({"name": "p"})
    a = k()
    updated = client.add_compute_plan_tasks(plan.key, [task(a)])
    assert updated.task_count == 1
    updated = client.add_compute_plan_tasks(plan.key, {"tasks": [task(None, a)]})
    assert updated.task_count == 2
    with pytest.raises(exc.KeyFormatError):
        client.add_compute_plan_tasks("nope", [task()])


def test_add_task_creates_derived_implicit_plan_and_is_idempotent(client, adapter, server):
    spec = {"key": k(), "function_key": FN, "worker": "MyOrg1MSP"}
    assert client.add_task(spec) == spec["key"]
    plan_key = implicit_plan_key(spec["key"])
    assert server.plans[plan_key]["name"] == spec["key"]
    assert client.add_task(spec) == spec["key"]  # rerun: plan 409 -> reuse, batch 409 -> confirmed
    assert len(server.plans) == 1 and len(server.tasks) == 1


def test_add_task_into_given_plan(client, server):
    plan = client.add_compute_plan({"name": "p"})
    key = client.add_task({"function_key": FN, "worker": "o", "compute_plan_key": plan.key})
    assert server.tasks[key]["compute_plan_key"] == plan.key and len(server.plans) == 1


# -- cancel -----------------------------------------------------------------------------------------


def test_cancel_ok(client, adapter):
    key = k()
    adapter.route("POST", rf"/compute_plan/{key}/cancel/", lambda c, m: (200, {}, {}))
    client.cancel_compute_plan(key)
    assert adapter.paths("POST") == [f"/compute_plan/{key}/cancel/"]


def test_second_cancel_500_is_success_when_canceled(client, adapter, server):
    key = k()
    server.plans[key] = plan_body(key, status="PLAN_STATUS_CANCELED")
    adapter.route("POST", rf"/compute_plan/{key}/cancel/", lambda c, m: (500, b"<html>error</html>", {}))
    client.cancel_compute_plan(key)
    assert adapter.paths("POST").count(f"/compute_plan/{key}/cancel/") == 1


def test_cancel_of_finished_plan_raises_with_status(client, adapter, server):
    key = k()
    server.plans[key] = plan_body(key, status="PLAN_STATUS_DONE")
    adapter.route("POST", rf"/compute_plan/{key}/cancel/", lambda c, m: (500, b"", {}))
    with pytest.raises(exc.InternalServerError, match="plan status: PLAN_STATUS_DONE"):
        client.cancel_compute_plan(key)


def test_cancel_timeout_resolved_by_status_not_resend(client, adapter, server, sleeps):
    import requests

    key = k()
    server.plans[key] = plan_body(key, status="PLAN_STATUS_DOING")
    calls = []

    def cancel(call, match):
        calls.append(1)
        server.plans[key]["status"] = "PLAN_STATUS_CANCELED"
        raise requests.exceptions.ReadTimeout("slow")

    adapter.route("POST", rf"/compute_plan/{key}/cancel/", cancel)
    client.cancel_compute_plan(key)
    assert len(calls) == 1


def test_cancel_unknown_plan(client, adapter):
    with pytest.raises(exc.NotFound):
        client.cancel_compute_plan(k())


# -- datasets, samples, functions ------------------------------------------------------------------


def test_add_dataset_multipart(client, adapter, tmp_path):
    opener = tmp_path / "opener.py"
    opener.write_text("print('opener')\n")
    adapter.route("POST", r"/data_manager/", lambda c, m: (201, {"key": "ds-key", "description": "a string"}, {}))
    key = client.add_dataset(
        {
            "name": "MNIST",
            "data_opener": opener,
            "permissions": PUBLIC,
            "logs_permission": PUBLIC,
            "metadata": {"a": "b"},
        }
    )
    assert key == "ds-key"
    body = adapter.calls[-1].body
    assert multipart_json(body) == {
        "name": "MNIST",
        "permissions": PUBLIC,
        "logs_permission": PUBLIC,
        "metadata": {"a": "b"},
    }
    assert multipart_file(body, "data_opener") == b"print('opener')\n"
    assert b"No description given" in multipart_file(body, "description")


def _dataset_with_type(tmp_path) -> dict:
    """A dataset spec as the SDK 1.0 documentation writes it, with its ``type`` key."""
    opener = tmp_path / "opener.py"
    opener.write_text("print('opener')\n")
    return {"name": "MNIST", "type": "csv", "data_opener": opener, "permissions": PUBLIC, "logs_permission": PUBLIC}


def test_add_dataset_drops_the_sdk_type_key_with_one_warning(client, adapter, tmp_path):
    adapter.route("POST", r"/data_manager/", lambda c, m: (201, {"key": "ds-key"}, {}))
    with pytest.warns(exc.UnknownSpecKeysWarning) as caught:
        assert client.add_dataset(_dataset_with_type(tmp_path)) == "ds-key"
    assert [str(w.message).split(":")[0] for w in caught] == ["DatasetSpec"]
    assert "'type'" in str(caught[0].message)
    assert "type" not in multipart_json(adapter.calls[-1].body)


def test_add_dataset_refuses_the_type_key_under_strict(make_client, adapter, tmp_path):
    adapter.route("POST", r"/data_manager/", lambda c, m: (201, {"key": "ds-key"}, {}))
    client = make_client(strict=True)
    with pytest.raises(exc.SpecValidationError) as raised:
        client.add_dataset(_dataset_with_type(tmp_path))
    assert raised.value.field == "type" and "'csv'" in str(raised.value)
    assert adapter.calls == []


def test_strict_is_a_setting_like_the_others(make_client, monkeypatch):
    monkeypatch.setenv("SUBSTRA_ORG1_STRICT", "true")
    assert make_client(client_name="org1").settings.strict is True
    assert make_client().settings.strict is False


def test_add_data_sample_zips_folder(client, adapter, tmp_path):
    ds = k()
    folder = tmp_path / "sample1"
    (folder / "sub").mkdir(parents=True)
    (folder / "x.csv").write_text("1,2\n")
    (folder / "sub" / "y.csv").write_text("3,4\n")
    adapter.route("POST", r"/data_sample/", lambda c, m: (201, [{"key": "s1"}], {}))
    assert client.add_data_sample({"path": folder, "data_manager_keys": [ds]}) == "s1"
    body = adapter.calls[-1].body
    assert multipart_json(body) == {"data_manager_keys": [ds]}
    archive = zipfile.ZipFile(io.BytesIO(multipart_file(body, "path")))
    assert sorted(archive.namelist()) == ["sub/y.csv", "x.csv"]


def test_add_data_samples_same_basename_not_lost(client, adapter, tmp_path):
    ds = k()
    for parent in ("a", "b"):
        (tmp_path / parent / "train").mkdir(parents=True)
        (tmp_path / parent / "train" / "f").write_text(parent)
    adapter.route("POST", r"/data_sample/", lambda c, m: (201, [{"key": "s1"}, {"key": "s2"}], {}))
    keys = client.add_data_samples(
        {"paths": [tmp_path / "a" / "train", tmp_path / "b" / "train"], "data_manager_keys": [ds]}
    )
    assert keys == ["s1", "s2"]
    body = adapter.calls[-1].body
    assert b'name="train"' in body and b'name="train_2"' in body


def test_add_data_sample_checks_folders_before_sending(client, adapter, tmp_path):
    ds = k()
    with pytest.raises(exc.LoadDataException) as info:
        client.add_data_sample({"path": tmp_path / "missing", "data_manager_keys": [ds]})
    assert info.value.field == "path"
    (tmp_path / "empty").mkdir()
    with pytest.raises(exc.LoadDataException, match="no file"):
        client.add_data_sample({"path": tmp_path / "empty", "data_manager_keys": [ds]})
    with pytest.raises(exc.SpecValidationError, match="add_data_samples"):
        client.add_data_sample({"paths": [tmp_path], "data_manager_keys": [ds]})
    assert adapter.calls == []


def test_add_data_sample_server_path(client, adapter, tmp_path):
    ds = k()
    adapter.route("POST", r"/data_sample/", lambda c, m: (201, [{"key": "s1"}], {}))
    client.add_data_sample({"path": "/srv/servermedias/ds1", "data_manager_keys": [ds]}, local=False)
    assert adapter.calls[-1].json() == {"data_manager_keys": [ds], "path": "/srv/servermedias/ds1"}
    client.add_data_samples({"paths": ["/srv/a", "/srv/b"], "data_manager_keys": [ds]}, local=False)
    assert adapter.calls[-1].json()["paths"] == ["/srv/a", "/srv/b"]


def test_link_dataset_form_encoded(client, adapter):
    ds, s1, s2 = k(), k(), k()
    adapter.route("POST", r"/data_sample/bulk_update/", lambda c, m: (200, {}, {}))
    assert client.link_dataset_with_data_samples(ds, [s1, s2]) == [s1, s2]
    call = adapter.calls[-1]
    assert call.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(call.body.decode()) == {"data_manager_keys": [ds], "data_sample_keys": [s1, s2]}


def test_add_function_rejects_non_archive(client, adapter, tmp_path):
    (tmp_path / "f.txt").write_text("not an archive")
    (tmp_path / "d.md").write_text("d")
    with pytest.raises(exc.LoadDataException) as info:
        client.add_function(
            {"name": "f", "file": tmp_path / "f.txt", "description": tmp_path / "d.md", "permissions": PUBLIC}
        )
    assert info.value.field == "file"
    assert adapter.calls == []


@pytest.mark.parametrize(
    ("method", "route"),
    [("update_dataset", "data_manager"), ("update_function", "function"), ("update_compute_plan", "compute_plan")],
)
def test_updates_put_name(client, adapter, method, route):
    key = k()
    adapter.route("PUT", rf"/{route}/{key}/", lambda c, m: (200, {}, {}))
    assert getattr(client, method)(key, "new name") is None
    assert adapter.calls[-1].json() == {"name": "new name"}


# -- getters and lists -------------------------------------------------------------------------------


def test_get_rejects_bad_key_without_request(client, adapter):
    for getter in (client.get_task, client.get_dataset, client.get_model, client.get_compute_plan):
        with pytest.raises(exc.KeyFormatError):
            getter("../../admin")
    assert adapter.calls == []


def test_get_not_found_names_key(client):
    key = k()
    with pytest.raises(exc.NotFound) as info:
        client.get_compute_plan(key)
    assert info.value.key == key and key in str(info.value)
    assert "No ComputePlan matches the given query." in str(info.value)


def test_server_shape_mismatch_is_invalid_response(client, adapter):
    key = k()
    adapter.route("GET", rf"/function/{key}/", lambda c, m: (200, {"key": key}, {}))
    with pytest.raises(exc.InvalidResponse, match="unexpected Function shape"):
        client.get_function(key)


def test_models_tolerate_extra_fields(client, adapter):
    key = k()
    adapter.route("GET", rf"/function/{key}/", lambda c, m: (200, {**function_body(key), "brand_new": 1}, {}))
    function = client.get_function(key)
    assert function.status is models.FunctionStatus.ready
    assert function.inputs[0].identifier == "opener"


def test_format_filters():
    assert format_filters("task", {"key": ["a", "b"], "rank": [0, 1], "worker": "My Org"}) == {
        "key": "a,b",
        "rank": "0,1",
        "worker": "MyOrg",
    }
    assert format_filters("compute_plan", {"name": "mnist v2"}) == {"match": "mnist v2"}
    meta = format_filters("task", {"metadata": [{"key": "phase", "type": "is", "value": "warm up"}]})
    assert meta == {"metadata": '[{"key":"phase","type":"is","value":"warm up"}]'}
    assert format_filters("task", {"status": ["STATUS_DONE"]}) == {"status": "STATUS_DONE"}


@pytest.mark.parametrize(
    ("route", "filters", "error", "fragment"),
    [
        ("data_manager", {"permissions": ["x"]}, exc.NotAllowedFilterError, "unfiltered"),
        ("compute_plan", {"worker": ["x"]}, exc.NotAllowedFilterError, "unfiltered"),
        ("task", {"colour": ["x"]}, exc.NotAllowedFilterError, "allowed"),
        ("task", {"status": ["DONE"]}, exc.FilterFormatError, "unknown status"),
        ("task", {"function_key": ["a", "b"]}, exc.FilterFormatError, "single value"),
        ("task", {"key": []}, exc.FilterFormatError, "non-empty"),
        ("task", {"key": ["a,b"]}, exc.FilterFormatError, "comma"),
        ("compute_plan", {"name": ["x"]}, exc.FilterFormatError, "string"),
        ("task", {"metadata": [{"key": "a", "type": "equals"}]}, exc.FilterFormatError, "is, contains"),
        ("task", {"metadata": [{"key": "a", "type": "is"}]}, exc.FilterFormatError, "string is required"),
    ],
)
def test_bad_filters(route, filters, error, fragment):
    with pytest.raises(error, match=fragment) as info:
        format_filters(route, filters)
    assert info.value.field.startswith("filters.")


def test_ordering():
    assert format_ordering("task", "creation_date", False) == {"ordering": "-creation_date"}
    assert format_ordering("task", "rank", True) == {"ordering": "rank"}
    with pytest.raises(exc.OrderingFormatError):
        format_ordering("data_manager", "start_date", True)


def test_list_params_and_page_size(client, adapter, server):
    client.add_compute_plan({"name": "p", "tasks": [task() for _ in range(3)]})
    adapter.calls.clear()
    client.list_task({"status": ["STATUS_DONE"]}, order_by="rank", ascending=True)
    q = adapter.calls[-1].query
    assert q == {"status": ["STATUS_DONE"], "ordering": ["rank"], "page_size": ["1000"]}
    with pytest.raises(exc.SpecValidationError):
        client.list_task(page_size=20000)


def test_list_organization_and_info(client, adapter):
    adapter.route(
        "GET",
        r"/organization/",
        lambda c, m: (200, [{"id": "MyOrg1MSP", "address": "", "creation_date": None, "is_current": True}], {}),
    )
    info = {
        "host": "http://x",
        "organization_id": "MyOrg1MSP",
        "organization_name": "org-1",
        "config": {"model_export_enabled": True},
        "channel": "c",
        "version": "1",
        "orchestrator_version": None,
        "auth": {},
    }
    adapter.route("GET", r"/info/", lambda c, m: (200, info, {}))
    assert client.list_organization()[0].is_current
    assert client.organization_info().config.model_export_enabled is True


# -- task assets, performances, files -------------------------------------------------------------


def _model(key, task_key):
    return {
        "key": key,
        "compute_task_key": task_key,
        "address": {"checksum": "c", "storage_address": f"{BASE}/model/{key}/file/"},
        "permissions": {"process": PUBLIC, "download": PUBLIC},
        "owner": "MyOrg1MSP",
        "creation_date": "2024-05-01T10:00:00Z",
    }


def test_task_output_assets(client, adapter, tmp_path):
    t, m = k(), k()
    outputs = [
        {"identifier": "model", "kind": "ASSET_MODEL", "asset": _model(m, t)},
        {
            "identifier": "performance",
            "kind": "ASSET_PERFORMANCE",
            "asset": {"performance_value": 0.87, "compute_task_key": t},
        },
    ]

    def handler(call, match):
        wanted = call.query.get("identifier", [None])[0]
        items = [o for o in outputs if wanted in (None, o["identifier"])]
        return 200, {"count": len(items), "next": None, "previous": None, "results": items}, {}

    adapter.route("GET", rf"/task/{t}/output_assets/", handler)
    assert client.get_task_output_asset(t, "performance").asset == 0.87
    assert isinstance(client.get_task_output_asset(t, "model").asset, models.Model)
    with pytest.raises(exc.TaskAssetNotFoundError):
        client.get_task_output_asset(t, "nothing")
    assert len(client.list_task_output_assets(t)) == 2
    adapter.route("GET", rf"/model/{m}/file/", lambda c, mt: (200, b"weights", {}))
    path = client.download_model_from_task(t, "model", tmp_path)
    assert path.name == f"model_{m}" and path.read_bytes() == b"weights"
    with pytest.raises(exc.SpecValidationError, match="not a model"):
        client.download_model_from_task(t, "performance", tmp_path)


def test_input_assets_typed_by_kind(client, adapter):
    t, s = k(), k()
    items = [
        {
            "identifier": "datasamples",
            "kind": "ASSET_DATA_SAMPLE",
            "asset": {"key": s, "owner": "o", "data_manager_keys": []},
        }
    ]
    adapter.route(
        "GET",
        rf"/task/{t}/input_assets/",
        lambda c, m: (200, {"count": 1, "next": None, "previous": None, "results": items}, {}),
    )
    (asset,) = client.list_task_input_assets(t)
    assert isinstance(asset.asset, models.DataSample) and asset.asset.key == s


def test_get_performances_rows(client, adapter, server):
    key, t1 = k(), k()
    server.plans[key] = plan_body(key, status="PLAN_STATUS_DONE", tag="exp", metadata={"lr": "0.1"})
    perf = {
        "results": [
            {
                "compute_task": {"key": t1, "rank": 1, "round_idx": "1", "worker": "MyOrg1MSP"},
                "identifier": "performance",
                "perf": 0.673,
            },
            {
                "compute_task": {"key": t1, "rank": 2, "round_idx": None, "worker": "MyOrg2MSP"},
                "identifier": "auc",
                "perf": 0.5,
            },
        ],
        "compute_plan_statistics": {},
    }
    adapter.route("GET", rf"/compute_plan/{key}/perf/", lambda c, m: (200, perf, {}))
    performances = client.get_performances(key)
    rows = performances.rows()
    assert len(performances) == 2
    assert rows[0] == {
        "compute_plan_key": key,
        "compute_plan_tag": "exp",
        "compute_plan_status": "PLAN_STATUS_DONE",
        "compute_plan_start_date": None,
        "compute_plan_end_date": None,
        "compute_plan_metadata": {"lr": "0.1"},
        "worker": "MyOrg1MSP",
        "task_key": t1,
        "task_rank": 1,
        "round_idx": 1,
        "identifier": "performance",
        "performance": 0.673,
    }
    assert rows[1]["round_idx"] is None
    assert performances.model_dump()["performance"] == [0.673, 0.5]


def test_download_dataset_rebases_foreign_storage_address(client, adapter, tmp_path):
    key = k()
    body = {
        "key": key,
        "name": "d",
        "owner": "o",
        "permissions": {"process": PUBLIC, "download": PUBLIC},
        "opener": {
            "checksum": "c",
            "storage_address": f"http://backend.internal:8000/org-1/data_manager/{key}/opener/",
        },
        "description": {"checksum": "c", "storage_address": f"{BASE}/data_manager/{key}/description/"},
        "metadata": {},
    }
    adapter.route("GET", rf"/data_manager/{key}/", lambda c, m: (200, body, {}))
    adapter.route("GET", rf"/data_manager/{key}/opener/", lambda c, m: (200, b"opener code", {}))
    adapter.route("GET", rf"/data_manager/{key}/description/", lambda c, m: (200, "# desc", {}))
    path = client.download_dataset(key, tmp_path / "new")
    assert path == (tmp_path / "new" / "opener.py").resolve() and path.read_bytes() == b"opener code"
    assert all(c.url.startswith("http://substra.test/") for c in adapter.calls)  # token never sent elsewhere
    assert client.describe_dataset(key) == "# desc"


def test_logs(client, adapter, tmp_path):
    t = k()
    adapter.route(
        "GET",
        rf"/task/{t}/logs/",
        lambda c, m: (200, "hello\n", {"Content-Disposition": 'attachment; filename="../x"'}),
    )
    assert client.get_logs(t) == "hello\n"
    path = client.download_logs(t, tmp_path)
    assert path == str((tmp_path / f"task_logs_{t}.txt").resolve())
    with pytest.raises(exc.KeyFormatError):
        client.download_logs("../../etc/passwd", tmp_path)


def test_download_model_path_is_safe(client, tmp_path):
    with pytest.raises(exc.KeyFormatError):
        client.download_model("../evil", tmp_path)


# -- auth -------------------------------------------------------------------------------------------


def test_login_and_logout(make_client, adapter, server):
    with make_client(username="alice", password="s3cret-pass") as client:
        login = adapter.calls[0]
        assert login.path == "/api-token-auth/" and "Authorization" not in login.headers
        assert parse_qs(login.body.decode()) == {"username": ["alice"], "password": ["s3cret-pass"]}
        assert client.transport.token == f"{1:040x}"
    logout = adapter.calls[-1]
    assert logout.method == "DELETE" and logout.path == "/active-api-tokens/" and list(logout.query) == ["id"]
    assert client.transport.token is None


def test_logout_only_if_logged_in(client, adapter):
    client.close()
    assert adapter.calls == []


def test_logout_failure_is_ignored(make_client, adapter, server, caplog):
    client = make_client(username="alice", password="s3cret-pass")
    adapter.fault("DELETE", r"/active-api-tokens/", (404, {"detail": "Token not found"}, {}))
    client.logout()
    assert "logout" in caplog.text


def test_bad_login(make_client, server):
    with pytest.raises(exc.BadLoginException, match="Unable to log in") as info:
        make_client(username="alice", password="wrong")
    assert isinstance(info.value, exc.AuthenticationError) and info.value.status_code == 400


def test_login_disabled(make_client, adapter, server):
    body = {"detail": "Implicit login is disabled on this server", "substra_identifier": "implicit_login_disabled"}
    adapter.fault("POST", r"/api-token-auth/", (403, body, {}))
    with pytest.raises(exc.UsernamePasswordLoginDisabledException, match="generate an API"):
        make_client(username="alice", password="s3cret-pass")


def test_login_non_json_is_configuration_error(make_client, adapter, server):
    adapter.fault("POST", r"/api-token-auth/", (200, b"<html>not substra</html>", {"Content-Type": "text/html"}))
    with pytest.raises(exc.ConfigurationError, match="URL of a Substra server"):
        make_client(username="alice", password="s3cret-pass")


def test_backend_type(make_client):
    assert make_client(backend_type="remote").backend_mode == "remote"
    with pytest.raises(exc.ConfigurationError, match="remote"):
        make_client(backend_type="subprocess")


def test_token_is_used_verbatim(client, adapter, server):
    key = k()
    server.tasks[key] = task_body(key, k())
    client.get_task(key)
    assert adapter.calls[-1].headers["Authorization"] == f"Token {TOKEN}"


def test_listing_pauses_the_cyclic_gc_only_while_parsing_and_restores_it(client, adapter):
    import gc

    plan = k()
    seen: list[bool] = []
    page = {"count": 1, "next": None, "results": [task_body(k(), plan)]}
    adapter.route("GET", r"/task/", lambda c, m: (200, page, {}))
    assert gc.isenabled()
    assert len(client.list_task()) == 1
    seen.append(gc.isenabled())
    adapter.route("GET", r"/task/", lambda c, m: (200, {"count": 1, "next": None, "results": [{"key": 3}]}, {}))
    with pytest.raises(exc.InvalidResponse):
        client.list_task()
    seen.append(gc.isenabled())
    gc.disable()
    try:
        adapter.route("GET", r"/task/", lambda c, m: (200, {"count": 0, "next": None, "results": []}, {}))
        client.list_task()
        seen.append(gc.isenabled())
    finally:
        gc.enable()
    assert seen == [True, True, False]  # back on after a parse and after a failed one; left off if it was off
