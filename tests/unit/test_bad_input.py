"""Bad input never reaches the server: property-based tests of specs and step parameters.

Each test draws a VALID spec (dataset, function, data samples, compute plan with a task graph),
checks that it is accepted, then mutates exactly ONE field into an invalid value and checks that
the client method (or pipeline step) raises :class:`SpecValidationError` (or a subclass) whose
``field`` names the mutated field, whose message shows the bad value, and that the fake server
received zero requests. The valid twin is the control: it proves the mutation, not the generator,
caused the refusal.
"""

from __future__ import annotations

import copy
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples import assets
from substra_flows import SubstraClient, schemas, steps
from substra_flows import exceptions as exc
from substra_flows.schemas import build_spec

from ._fakes import BASE, TOKEN, FakeAdapter, MiniServer

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ORG_IDS = ("MyOrg1MSP", "MyOrg2MSP")
# no "=" nor ":" so that a drawn value can never look like a credential the redactor would mask
SAFE_TEXT = string.ascii_letters + string.digits + " -_."


# -- shared files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Files:
    """Real files and folders the specs point to (created once per module)."""

    opener: Path
    description: Path
    archive: Path
    not_an_archive: Path
    directory: Path
    samples: tuple[Path, ...]
    empty_sample: Path
    missing: Path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("bad-input")
    not_archive = root / "function.py"
    not_archive.write_text("print('not an archive')\n")
    empty = root / "empty-sample"
    empty.mkdir()
    return Files(
        opener=assets.opener_path(),
        description=assets.write_description(root / "description.md", "bad input"),
        archive=assets.build_function_archive("train", root),
        not_an_archive=not_archive,
        directory=root,
        samples=tuple(assets.generate_samples(1, root / "samples", n_samples=3)),
        empty_sample=empty,
        missing=root / "does-not-exist" / "opener.py",
    )


def fake_client(strict: bool = True) -> tuple[SubstraClient, FakeAdapter]:
    """A token client (no login request) over a fresh fake server; sleeps are not slept.

    ``strict`` by default: the properties below check that every bad field, typos included, is
    refused; the lenient default (unknown keys dropped with a warning) has its own test.
    """
    adapter = FakeAdapter()
    MiniServer(adapter)
    session = requests.Session()
    session.mount("http://", adapter)
    client = SubstraClient(url=BASE, token=TOKEN, session=session, max_attempts=1, strict=strict)
    client.transport.sleep = lambda _: None
    return client, adapter


# -- strategies of valid specs ---------------------------------------------------------------------

names = st.text(alphabet=SAFE_TEXT, min_size=1, max_size=60).filter(lambda s: s.strip() != "")
org_ids = st.sampled_from(ORG_IDS)
keys = st.uuids().map(str)
permissions = st.fixed_dictionaries(
    {"public": st.booleans(), "authorized_ids": st.lists(org_ids, unique=True, max_size=2)}
)
metadata_keys = st.text(alphabet=string.ascii_lowercase + string.digits + "_", min_size=1, max_size=20).filter(
    lambda s: "__" not in s
)
metadata = st.dictionaries(metadata_keys, st.text(alphabet=SAFE_TEXT, max_size=30), max_size=3)
not_uuids = st.one_of(
    st.sampled_from(["not-a-uuid", "1234", "../../etc/passwd", "g" * 32, "a428d7a3-7458-421d-a818", ""]),
    st.text(alphabet=SAFE_TEXT, min_size=1, max_size=40).filter(lambda s: not _parses_as_uuid(s)),
)
oversized = st.text(alphabet=string.ascii_letters, min_size=101, max_size=400)
non_booleans = st.sampled_from(["maybe", "yes please", 2, 3.5, [True], {"v": True}])


def _parses_as_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


@st.composite
def dataset_specs(draw: st.DrawFn, files: Files) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": draw(names),
        "data_opener": str(files.opener),
        "permissions": draw(permissions),
        "logs_permission": draw(permissions),
    }
    if draw(st.booleans()):
        spec["description"] = str(files.description)
    if draw(st.booleans()):
        spec["metadata"] = draw(metadata)
    return spec


@st.composite
def function_specs(draw: st.DrawFn, files: Files) -> dict[str, Any]:
    which = draw(st.sampled_from(assets.FUNCTION_NAMES))
    spec: dict[str, Any] = {
        "name": draw(names),
        "description": str(files.description),
        "file": str(files.archive),
        "permissions": draw(permissions),
        "inputs": [{"identifier": i, **v} for i, v in assets.function_inputs(which).items()],
        "outputs": [{"identifier": i, **v} for i, v in assets.function_outputs(which).items()],
    }
    if draw(st.booleans()):
        spec["metadata"] = draw(metadata)
    return spec


@st.composite
def sample_specs(draw: st.DrawFn, files: Files) -> dict[str, Any]:
    paths = draw(st.lists(st.sampled_from(files.samples), min_size=1, max_size=3, unique=True))
    return {"paths": [str(p) for p in paths], "data_manager_keys": draw(st.lists(keys, min_size=1, max_size=2))}


@st.composite
def plan_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A plan whose tasks form a DAG (each task may read outputs of earlier ones), listed in any order."""
    n = draw(st.integers(1, 6))
    task_ids = draw(st.lists(keys, min_size=n, max_size=n, unique=True))
    tasks = []
    for i, task_id in enumerate(task_ids):
        inputs: list[dict[str, Any]] = [{"identifier": "opener", "asset_key": draw(keys)}]
        inputs += [{"identifier": "datasamples", "asset_key": k} for k in draw(st.lists(keys, max_size=2))]
        parents = draw(st.lists(st.sampled_from(task_ids[:i]), unique=True, max_size=2)) if i else []
        inputs += [
            {"identifier": "model", "parent_task_key": p, "parent_task_output_identifier": "model"} for p in parents
        ]
        task: dict[str, Any] = {
            "task_id": task_id,
            "function_key": draw(keys),
            "worker": draw(org_ids),
            "inputs": inputs,
            "outputs": {"model": {"permissions": draw(permissions), "is_transient": draw(st.booleans())}},
        }
        if draw(st.booleans()):
            task["metadata"] = draw(metadata)
        tasks.append(task)
    spec: dict[str, Any] = {"key": draw(keys), "name": draw(names), "tasks": draw(st.permutations(tasks))}
    if draw(st.booleans()):
        spec["tag"] = draw(st.text(alphabet=SAFE_TEXT, max_size=30))
    if draw(st.booleans()):
        spec["metadata"] = draw(metadata)
    return spec


# -- mutations -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Broken:
    """What a mutation did: the field it broke (as the error must name it) and text the message must show."""

    field: str
    shown: str


Mutation = Callable[[st.DrawFn, dict[str, Any], Files], Broken]


def _set(spec: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b.0.c`` in nested dicts/lists."""
    parts = path.split(".")
    target: Any = spec
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target[part]
    last = parts[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value


def replace(path: str, values: st.SearchStrategy[Any]) -> Mutation:
    """Mutation: put a drawn bad value at ``path``; the error must name ``path`` and show the value."""

    def mutate(draw: st.DrawFn, spec: dict[str, Any], files: Files) -> Broken:
        value = draw(values)
        _set(spec, path, value)
        return Broken(path, repr(value)[:60])

    return mutate


def missing_file(path: str, kind: str = "missing") -> Mutation:
    """Mutation: point ``path`` at a file that does not exist, or at a folder."""

    def mutate(draw: st.DrawFn, spec: dict[str, Any], files: Files) -> Broken:
        value = str(files.missing if kind == "missing" else files.directory)
        spec[path] = value
        return Broken(path, value)

    return mutate


def drop(path: str) -> Mutation:
    """Mutation: remove a required field; the message must say it is missing."""

    def mutate(draw: st.DrawFn, spec: dict[str, Any], files: Files) -> Broken:
        del spec[path]
        return Broken(path, "(missing)")

    return mutate


def reserved_metadata_key(where: str = "metadata") -> Mutation:
    """Mutation: add a metadata key containing '__' (reserved by the server)."""

    def mutate(draw: st.DrawFn, spec: dict[str, Any], files: Files) -> Broken:
        key = draw(metadata_keys) + "__" + draw(metadata_keys)
        target = _get(spec, where.rsplit(".", 1)[0]) if "." in where else spec
        target.setdefault("metadata", {})[key] = "v"
        return Broken(where, repr(key))

    return mutate


def oversized_metadata_value(where: str = "metadata") -> Mutation:
    def mutate(draw: st.DrawFn, spec: dict[str, Any], files: Files) -> Broken:
        key = draw(metadata_keys)
        target = _get(spec, where.rsplit(".", 1)[0]) if "." in where else spec
        target.setdefault("metadata", {})[key] = draw(oversized)
        return Broken(where, repr(key))

    return mutate


def non_string_metadata_value(where: str = "metadata") -> Mutation:
    def mutate(draw: st.DrawFn, spec: dict[str, Any], files: Files) -> Broken:
        key = draw(metadata_keys)
        value = draw(st.sampled_from([1, 2.5, None, ["a"], {"b": "c"}]))
        target = _get(spec, where.rsplit(".", 1)[0]) if "." in where else spec
        target["metadata"] = {key: value}
        return Broken(f"{where}.{key}", repr(value))

    return mutate


UNKNOWN_FIELDS = ["nme", "permission", "compute_plan_name", "tasks_list", "data_openner"]


def unknown_field(draw: st.DrawFn, spec: dict[str, Any], files: Files) -> Broken:
    """A typo'd field name is refused under strict=True, not silently dropped."""
    name = draw(st.sampled_from(UNKNOWN_FIELDS))
    spec[name] = "x"
    return Broken(name, "'x'")


def _get(spec: dict[str, Any], path: str) -> Any:
    target: Any = spec
    for part in path.split("."):
        target = target[int(part)] if isinstance(target, list) else target[part]
    return target


# datasets ---------------------------------------------------------------------------------------

DATASET_MUTATIONS: dict[str, Mutation] = {
    "empty name": replace("name", st.just("")),
    "oversized name": replace("name", oversized),
    "name of wrong type": replace("name", st.sampled_from([123, 4.5, ["n"], {"n": 1}])),
    "missing opener": missing_file("data_opener"),
    "opener is a folder": missing_file("data_opener", kind="folder"),
    "missing description": missing_file("description"),
    "public not a boolean": replace("permissions.public", non_booleans),
    "authorized_ids not a list": replace("permissions.authorized_ids", st.sampled_from(ORG_IDS)),
    "logs_permission missing": drop("logs_permission"),
    "metadata key with __": reserved_metadata_key(),
    "metadata value oversized": oversized_metadata_value(),
    "metadata value not a string": non_string_metadata_value(),
    "unknown field": unknown_field,
}


# functions --------------------------------------------------------------------------------------


def function_io(kind: str) -> Mutation:
    """Mutations of one input or output of the function."""

    def mutate(draw: st.DrawFn, spec: dict[str, Any], files: Files) -> Broken:
        if kind == "duplicate input":
            spec["inputs"].append(dict(spec["inputs"][0]))
            return Broken("inputs", repr(spec["inputs"][0]["identifier"]))
        if kind == "unknown kind":
            i = draw(st.integers(0, len(spec["inputs"]) - 1))
            value = draw(st.sampled_from(["ASSET_FOO", "model", "", "ASSET_TASK"]))
            spec["inputs"][i]["kind"] = value
            return Broken(f"inputs.{i}.kind", repr(value))
        if kind == "opener renamed":
            spec["inputs"] = [
                {"identifier": "my_opener", "kind": "ASSET_DATA_MANAGER", "multiple": False, "optional": False}
            ]
            return Broken("inputs.0", "'my_opener'")
        if kind == "output of input-only kind":
            i = draw(st.integers(0, len(spec["outputs"]) - 1))
            spec["outputs"][i]["kind"] = "ASSET_DATA_SAMPLE"
            return Broken(f"outputs.{i}", repr(spec["outputs"][i]["identifier"]))
        if kind == "multiple performance":
            spec["outputs"] = [{"identifier": "performance", "kind": "ASSET_PERFORMANCE", "multiple": True}]
            return Broken("outputs.0", "'performance'")
        raise AssertionError(kind)

    return mutate


FUNCTION_MUTATIONS: dict[str, Mutation] = {
    "empty name": replace("name", st.just("")),
    "oversized name": replace("name", oversized),
    "missing archive": missing_file("file"),
    "missing description": missing_file("description"),
    "public not a boolean": replace("permissions.public", non_booleans),
    "duplicate input identifier": function_io("duplicate input"),
    "unknown input kind": function_io("unknown kind"),
    "data manager input not named opener": function_io("opener renamed"),
    "output of an input-only kind": function_io("output of input-only kind"),
    "multiple performance output": function_io("multiple performance"),
    "metadata key with __": reserved_metadata_key(),
    "unknown field": unknown_field,
}


# compute plans ----------------------------------------------------------------------------------


def on_task(field: str, values: st.SearchStrategy[Any]) -> Mutation:
    """Put a bad value into ``field`` of one drawn task (path ``tasks.<i>.<field>``)."""

    def mutate(draw: st.DrawFn, spec: dict[str, Any], files: Files) -> Broken:
        i = draw(st.integers(0, len(spec["tasks"]) - 1))
        value = draw(values)
        _set(spec["tasks"][i], field, value)
        return Broken(f"tasks.{i}.{field}", repr(value)[:60])

    return mutate


def on_input(kind: str) -> Mutation:
    """Break one task input: both asset_key and parent, neither, or half a parent reference."""

    def mutate(draw: st.DrawFn, spec: dict[str, Any], files: Files) -> Broken:
        i = draw(st.integers(0, len(spec["tasks"]) - 1))
        task = spec["tasks"][i]
        j = 0  # every task's first input is its opener (an asset reference)
        ref = task["inputs"][j]
        if kind == "both":
            ref["parent_task_key"] = str(uuid.uuid4())
            ref["parent_task_output_identifier"] = "model"
        elif kind == "neither":
            del ref["asset_key"]
        else:  # half a parent: key without output identifier
            del ref["asset_key"]
            ref["parent_task_key"] = str(uuid.uuid4())
        return Broken(f"tasks.{i}.inputs.{j}", repr(ref["identifier"]))

    return mutate


def duplicate_task_id(draw: st.DrawFn, spec: dict[str, Any], files: Files) -> Broken:
    """Give two tasks the same task_id (copying the only task of a one-task plan)."""
    tasks = spec["tasks"]
    if len(tasks) == 1:
        tasks.append(copy.deepcopy(tasks[0]))  # the first task of a plan never has parents
        return Broken("tasks", tasks[0]["task_id"])
    i, j = draw(st.lists(st.integers(0, len(tasks) - 1), min_size=2, max_size=2, unique=True))
    tasks[j]["task_id"] = tasks[i]["task_id"]
    return Broken("tasks", tasks[i]["task_id"])


def cycle(draw: st.DrawFn, spec: dict[str, Any], files: Files) -> Broken:
    """Close a loop: a task reads the output of a task that (directly) reads its own, or itself."""
    tasks = spec["tasks"]
    a = draw(st.integers(0, len(tasks) - 1))
    b = draw(st.integers(0, len(tasks) - 1))
    parent = {"identifier": "model", "parent_task_output_identifier": "model"}
    tasks[a]["inputs"].append({**parent, "parent_task_key": tasks[b]["task_id"]})
    if a != b:
        tasks[b]["inputs"].append({**parent, "parent_task_key": tasks[a]["task_id"]})
    return Broken("tasks", tasks[a]["task_id"])


PLAN_MUTATIONS: dict[str, Mutation] = {
    "plan key not a UUID": replace("key", not_uuids),
    "empty name": replace("name", st.just("")),
    "oversized name": replace("name", oversized),
    "name of wrong type": replace("name", st.sampled_from([42, 1.5, ["p"], None])),
    "oversized tag": replace("tag", oversized),
    "metadata key with __": reserved_metadata_key(),
    "metadata value oversized": oversized_metadata_value(),
    "task_id not a UUID": on_task("task_id", not_uuids),
    "function_key not a UUID": on_task("function_key", not_uuids),
    "empty worker": on_task("worker", st.just("")),
    "task metadata key with __": on_task("metadata", st.just({"a__b": "c"})),
    "input with asset_key and parent": on_input("both"),
    "input with neither asset_key nor parent": on_input("neither"),
    "input with half a parent reference": on_input("half"),
    "asset_key not a UUID": on_task("inputs.0.asset_key", not_uuids),
    "output public not a boolean": on_task("outputs.model.permissions.public", non_booleans),
    "output authorized_ids not a list": on_task("outputs.model.permissions.authorized_ids", st.sampled_from(ORG_IDS)),
    "tasks not a list": replace("tasks", st.sampled_from(["task", 3, {"a": 1}])),
    "duplicate task ids": duplicate_task_id,
    "dependency cycle": cycle,
    "unknown field": unknown_field,
}


# -- assertions ------------------------------------------------------------------------------------


def assert_refused(call: Callable[[], Any], adapter: FakeAdapter, broken: Broken) -> exc.SpecValidationError:
    """``call`` must raise a validation error naming the field and showing the value, sending nothing."""
    with pytest.raises(exc.SpecValidationError) as raised:
        call()
    error = raised.value
    fields = [e["field"] for e in error.errors] or [error.field]
    assert broken.field in fields or broken.field in str(error), (broken, fields, str(error))
    assert broken.shown in str(error), (broken, str(error))
    assert adapter.calls == [], [f"{c.method} {c.path}" for c in adapter.calls]
    return error


def _draw_mutation(draw: st.DrawFn, table: dict[str, Mutation]) -> tuple[str, Mutation]:
    name = draw(st.sampled_from(sorted(table)))
    return name, table[name]


# -- properties --------------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_dataset_with_one_bad_field_is_refused_before_sending(files: Files, data: st.DataObject) -> None:
    valid = data.draw(dataset_specs(files), label="valid dataset")
    build_spec(schemas.DatasetSpec, valid)  # control: the unmutated spec is accepted
    spec = copy.deepcopy(valid)
    name, mutation = _draw_mutation(data.draw, DATASET_MUTATIONS)
    broken = mutation(data.draw, spec, files)
    client, adapter = fake_client()
    assert_refused(lambda: client.add_dataset(spec), adapter, broken)


@SETTINGS
@given(data=st.data())
def test_function_with_one_bad_field_is_refused_before_sending(files: Files, data: st.DataObject) -> None:
    valid = data.draw(function_specs(files), label="valid function")
    build_spec(schemas.FunctionSpec, valid)
    spec = copy.deepcopy(valid)
    name, mutation = _draw_mutation(data.draw, FUNCTION_MUTATIONS)
    broken = mutation(data.draw, spec, files)
    client, adapter = fake_client()
    assert_refused(lambda: client.add_function(spec), adapter, broken)


def test_function_archive_that_is_not_an_archive_is_refused(files: Files) -> None:
    client, adapter = fake_client()
    spec = {
        "name": "f",
        "description": str(files.description),
        "file": str(files.not_an_archive),
        "permissions": {"public": True, "authorized_ids": []},
    }
    error = assert_refused(lambda: client.add_function(spec), adapter, Broken("file", str(files.not_an_archive)))
    assert isinstance(error, exc.LoadDataException)


SAMPLE_MUTATIONS: dict[str, Mutation] = {
    "no dataset key": replace("data_manager_keys", st.just([])),
    "dataset key not a UUID": replace("data_manager_keys", not_uuids.map(lambda s: [s])),
    "unknown field": unknown_field,
}


@SETTINGS
@given(data=st.data())
def test_data_samples_with_one_bad_field_are_refused_before_sending(files: Files, data: st.DataObject) -> None:
    valid = data.draw(sample_specs(files), label="valid samples")
    build_spec(schemas.DataSampleSpec, valid)
    spec = copy.deepcopy(valid)
    choice = data.draw(st.sampled_from([*sorted(SAMPLE_MUTATIONS), "missing folder", "empty folder", "path and paths"]))
    if choice in SAMPLE_MUTATIONS:
        broken = SAMPLE_MUTATIONS[choice](data.draw, spec, files)
    elif choice == "path and paths":
        spec["path"] = spec["paths"][0]
        broken = Broken("path", "'path' and 'paths' are exclusive")
    else:
        i = data.draw(st.integers(0, len(spec["paths"]) - 1))
        bad = str(files.missing.parent if choice == "missing folder" else files.empty_sample)
        spec["paths"][i] = bad
        broken = Broken(f"paths.{i}", bad)
    client, adapter = fake_client()
    error = assert_refused(lambda: client.add_data_samples(spec), adapter, broken)
    if choice in ("missing folder", "empty folder"):
        assert isinstance(error, exc.LoadDataException)


@SETTINGS
@given(data=st.data())
def test_compute_plan_with_one_bad_field_is_refused_before_sending(files: Files, data: st.DataObject) -> None:
    valid = data.draw(plan_specs(), label="valid plan")
    build_spec(schemas.ComputePlanSpec, valid)
    spec = copy.deepcopy(valid)
    name, mutation = _draw_mutation(data.draw, PLAN_MUTATIONS)
    broken = mutation(data.draw, spec, files)
    client, adapter = fake_client()
    assert_refused(lambda: client.add_compute_plan(spec, batch_size=2), adapter, broken)


@SETTINGS
@given(spec=plan_specs(), batch_size=st.integers(1, 4))
def test_valid_plans_are_submitted_parents_first_in_batches(spec: dict[str, Any], batch_size: int) -> None:
    """The generator's plans really are valid: the fake server accepts every batch, in order."""
    client, adapter = fake_client()
    plan = client.add_compute_plan(spec, batch_size=batch_size)
    assert plan.key == spec["key"]
    batches = [c.json()["tasks"] for c in adapter.calls if c.path == "/task/bulk_create/"]
    n = len(spec["tasks"])
    assert [len(b) for b in batches] == [min(batch_size, n - i) for i in range(0, n, batch_size)]
    seen: set[str] = set()
    for task in (t for batch in batches for t in batch):
        assert all(ref["parent_task_key"] in seen for ref in task["inputs"] if ref["parent_task_key"])
        seen.add(task["key"])
    assert seen == {t["task_id"] for t in spec["tasks"]}


@SETTINGS
@given(spec=plan_specs(), batch_size=st.one_of(st.integers(-1000, 0), st.sampled_from([1.5, "2", None, True])))
def test_client_batch_size_below_one_is_refused(spec: dict[str, Any], batch_size: Any) -> None:
    client, adapter = fake_client()
    assert_refused(
        lambda: client.add_compute_plan(spec, batch_size=batch_size), adapter, Broken("batch_size", repr(batch_size))
    )


# -- pipeline steps ------------------------------------------------------------------------------------


#: the plan step reads a non-UUID task_id as a task NAME (its key is derived from it), so that one is valid there
STEP_PLAN_MUTATIONS = {name: m for name, m in PLAN_MUTATIONS.items() if name != "task_id not a UUID"}


def parent_by_unknown_name(draw: st.DrawFn, spec: dict[str, Any], files: Files) -> Broken:
    """Step only: a parent named by a task name that no task of the plan has."""
    i = draw(st.integers(0, len(spec["tasks"]) - 1))
    name = draw(st.sampled_from(["train-0", "no such task", "aggregate/1"]))
    spec["tasks"][i]["inputs"].append(
        {"identifier": "model", "parent_task_key": name, "parent_task_output_identifier": "model"}
    )
    return Broken(f"tasks.{i}.inputs.{len(spec['tasks'][i]['inputs']) - 1}.parent_task_key", repr(name))


STEP_PLAN_MUTATIONS["parent named by an unknown task name"] = parent_by_unknown_name


bad_batch_sizes = st.one_of(st.integers(-1000, 0), st.sampled_from([1.5, "3", None]))


@SETTINGS
@given(batch_size=bad_batch_sizes)
def test_step_register_dataset_refuses_bad_batch_size(files: Files, batch_size: Any) -> None:
    client, adapter = fake_client()
    assert_refused(
        lambda: steps.register_dataset(
            client,
            name="ds",
            opener=files.opener,
            sample_paths=list(files.samples),
            batch_size=batch_size,
        ),
        adapter,
        Broken("batch_size", repr(batch_size)),
    )


@SETTINGS
@given(batch_size=bad_batch_sizes)
def test_step_add_data_samples_refuses_bad_batch_size(files: Files, batch_size: Any) -> None:
    client, adapter = fake_client()
    assert_refused(
        lambda: steps.add_data_samples(
            client, dataset_key=str(uuid.uuid4()), sample_paths=list(files.samples), batch_size=batch_size
        ),
        adapter,
        Broken("batch_size", repr(batch_size)),
    )


@SETTINGS
@given(spec=plan_specs(), batch_size=bad_batch_sizes)
def test_step_submit_compute_plan_refuses_bad_batch_size(spec: dict[str, Any], batch_size: Any) -> None:
    client, adapter = fake_client()
    assert_refused(
        lambda: steps.submit_compute_plan(client, spec, batch_size=batch_size),
        adapter,
        Broken("batch_size", repr(batch_size)),
    )


@SETTINGS
@given(data=st.data())
def test_step_submit_compute_plan_refuses_bad_plan(files: Files, data: st.DataObject) -> None:
    spec = data.draw(plan_specs(), label="valid plan")
    name, mutation = _draw_mutation(data.draw, STEP_PLAN_MUTATIONS)
    broken = mutation(data.draw, spec, files)
    client, adapter = fake_client()
    assert_refused(lambda: steps.submit_compute_plan(client, spec, batch_size=2), adapter, broken)


STEP_DATASET_MUTATIONS: dict[str, tuple[str, Callable[[Files], Any]]] = {
    "missing opener": ("opener", lambda f: f.missing),
    "missing sample folder": ("sample_paths", lambda f: [*f.samples, f.missing.parent]),
    "empty name": ("name", lambda f: ""),
    "oversized name": ("name", lambda f: "n" * 101),
    "metadata key with __": ("metadata", lambda f: {"a__b": "c"}),
}


@pytest.mark.parametrize("case", sorted(STEP_DATASET_MUTATIONS))
def test_step_register_dataset_refuses_bad_arguments(files: Files, case: str, tmp_path: Path) -> None:
    field, make = STEP_DATASET_MUTATIONS[case]
    kwargs: dict[str, Any] = {
        "name": "ds",
        "opener": files.opener,
        "sample_paths": list(files.samples),
        "ledger_dir": tmp_path / "ledger",
    }
    kwargs[field] = make(files)
    client, adapter = fake_client()
    shown = {"missing opener": str(files.missing), "missing sample folder": str(files.missing.parent)}.get(
        case, repr(kwargs[field])[:60] if field != "metadata" else "'a__b'"
    )
    with pytest.raises(exc.SpecValidationError) as raised:
        steps.register_dataset(client, **kwargs)
    assert (
        field in str(raised.value)
        or field in [e["field"] for e in raised.value.errors]
        or any(str(e["field"]).startswith(field) for e in raised.value.errors)
    ), str(raised.value)
    assert shown in str(raised.value)
    assert adapter.calls == []
    ledger = kwargs["ledger_dir"]
    assert not ledger.exists() or not any(ledger.rglob("*")), "a refused step must not write its ledger"


@pytest.mark.parametrize(
    "case",
    ["missing archive", "empty name", "data manager input not named opener", "metadata key with __"],
)
def test_step_register_function_refuses_bad_arguments(files: Files, case: str) -> None:
    kwargs: dict[str, Any] = {
        "name": "fn",
        "archive": files.archive,
        "description": files.description,
        "inputs": assets.function_inputs("train"),
        "outputs": assets.function_outputs("train"),
    }
    if case == "missing archive":
        kwargs["archive"], field, shown = files.missing, "archive", str(files.missing)
    elif case == "empty name":
        kwargs["name"], field, shown = "", "name", "''"
    elif case == "data manager input not named opener":
        extra = {"opener2": {"kind": "ASSET_DATA_MANAGER", "optional": False, "multiple": False}}
        kwargs["inputs"] = {**kwargs["inputs"], **extra}
        field, shown = "inputs", "'opener2'"
    else:
        kwargs["metadata"], field, shown = {"x__y": "1"}, "metadata", "'x__y'"
    client, adapter = fake_client()
    with pytest.raises(exc.SpecValidationError) as raised:
        steps.register_function(client, **kwargs)
    assert field in str(raised.value), str(raised.value)
    assert shown in str(raised.value)
    assert adapter.calls == []
