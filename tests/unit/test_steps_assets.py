"""Dataset, sample and function steps against an in-memory fake client: fingerprints, the sample
ledger, and every way a batch can be interrupted."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from examples import assets
from substra_flows import exceptions as exc
from substra_flows import steps
from substra_flows.steps import assets as asset_steps
from substra_flows.steps.ledger import SampleLedger

ORG = "MyOrg1MSP"


def _lost(what: str) -> exc.AssetMaybeCreatedError:
    return exc.AssetMaybeCreatedError(
        f"read timeout. The {what} may have been created anyway",
        cause=exc.Timeout("read timeout"),
        asset_type=what,
    )


class FakeClient:
    """Just enough of SubstraClient for the asset steps. ``faults`` maps the n-th call of a method
    (1-based) to what goes wrong: 'lost' (applied, answer lost), 'unsent' (in doubt, not applied),
    'crash' (applied, then the process dies), 'crash-before' (dies before sending), 'foreign'
    (someone else adds a sample, then the answer is lost), 'refused' (400)."""

    url = "http://fake.test/org-1"

    def __init__(self) -> None:
        self.datasets: dict[str, dict[str, Any]] = {}
        self.functions: dict[str, dict[str, Any]] = {}
        self.calls: dict[str, int] = {}
        self.faults: dict[tuple[str, int], str] = {}
        self.sent_batches: list[list[str]] = []

    def _count(self, method: str) -> str | None:
        self.calls[method] = self.calls.get(method, 0) + 1
        return self.faults.get((method, self.calls[method]))

    def _fail(self, fault: str | None, what: str, apply: Callable[[], Any]) -> Any:
        if fault in ("crash-before",):
            raise RuntimeError("killed before sending")
        if fault == "unsent":
            raise _lost(what)
        if fault == "refused":
            raise exc.InvalidRequest("400: bad archive", status_code=400)
        result = apply()
        if fault == "lost":
            raise _lost(what)
        if fault == "crash":
            raise RuntimeError("killed after the server applied the request")
        return result

    def organization_info(self) -> Any:
        return SimpleNamespace(organization_id=ORG)

    # datasets and samples
    def list_dataset(self, filters: dict[str, Any]) -> list[Any]:
        assert filters["owner"] == [ORG]
        return [SimpleNamespace(**d) for d in self.datasets.values() if filters["name"].lower() in d["name"].lower()]

    def add_dataset(self, spec: Any) -> str:
        def apply() -> str:
            key = str(uuid.uuid4())
            self.datasets[key] = {
                "key": key,
                "name": spec.name,
                "metadata": dict(spec.metadata),
                "creation_date": None,
                "data_sample_keys": [],
            }
            return key

        return self._fail(self._count("add_dataset"), "dataset", apply)

    def get_dataset(self, key: str) -> Any:
        return SimpleNamespace(**self.datasets[key])

    def add_data_samples(self, spec: dict[str, Any], local: bool = True) -> list[str]:
        fault = self._count("add_data_samples")
        (dataset_key,) = spec["data_manager_keys"]
        if fault == "foreign":
            self.datasets[dataset_key]["data_sample_keys"].append(str(uuid.uuid4()))

        def apply() -> list[str]:
            keys = [str(uuid.uuid4()) for _ in spec["paths"]]
            self.datasets[dataset_key]["data_sample_keys"].extend(keys)
            self.sent_batches.append(list(spec["paths"]))
            return keys

        return self._fail("lost" if fault == "foreign" else fault, "data samples", apply)

    # functions
    def list_function(self, filters: dict[str, Any]) -> list[Any]:
        return [SimpleNamespace(**f) for f in self.functions.values() if filters["name"].lower() in f["name"].lower()]

    def add_function(self, spec: Any) -> str:
        def apply() -> str:
            key = str(uuid.uuid4())
            self.functions[key] = {
                "key": key,
                "name": spec.name,
                "metadata": dict(spec.metadata),
                "creation_date": None,
            }
            return key

        return self._fail(self._count("add_function"), "function", apply)


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(asset_steps, "_sleep", slept.append)
    return slept


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return assets.generate_samples(0, tmp_path_factory.mktemp("samples"), n_samples=5, rows_per_sample=3)


def _register(client: FakeClient, samples: list[Path], ledger: Path, **kwargs: Any) -> steps.RegisteredDataset:
    args: dict[str, Any] = {"name": "ds one", "opener": assets.opener_path(), "sample_paths": samples}
    args.update(kwargs)
    return steps.register_dataset(client, ledger_dir=ledger, batch_size=2, **args)


def _all_sample_keys(client: FakeClient) -> list[str]:
    return [k for d in client.datasets.values() for k in d["data_sample_keys"]]


def test_register_twice_finds_the_dataset_and_its_samples(samples: list[Path], tmp_path: Path):
    client = FakeClient()
    first = _register(client, samples, tmp_path)
    assert first.created and len(first.sample_keys) == 5 and first.new_sample_keys == first.sample_keys
    assert client.calls["add_data_samples"] == 3, "5 samples in batches of 2"
    second = _register(client, samples, tmp_path)
    assert second.dataset_key == first.dataset_key and not second.created
    assert second.sample_keys == first.sample_keys and second.new_sample_keys == []
    assert client.calls == {"add_dataset": 1, "add_data_samples": 3}
    json.dumps(second.to_dict())


def test_sample_keys_follow_the_given_paths_and_identical_contents_are_one_sample(samples: list[Path], tmp_path: Path):
    client = FakeClient()
    copy = tmp_path / "copy-of-0"
    copy.mkdir()
    (copy / "data.csv").write_bytes((samples[0] / "data.csv").read_bytes())
    result = _register(client, [samples[1], samples[0], copy], tmp_path / "ledger")
    assert len(_all_sample_keys(client)) == 2
    assert result.sample_keys[1] == result.sample_keys[2] != result.sample_keys[0]
    reordered = _register(client, [copy, samples[1]], tmp_path / "ledger")
    assert reordered.sample_keys == [result.sample_keys[1], result.sample_keys[0]]


def test_fingerprint_lives_in_metadata_and_covers_the_opener(samples: list[Path], tmp_path: Path):
    client = FakeClient()
    first = _register(client, samples[:1], tmp_path, metadata={"team": "a"})
    meta = client.datasets[first.dataset_key]["metadata"]
    assert meta["team"] == "a" and meta[steps.FINGERPRINT_KEY].startswith("v1:")
    other_opener = tmp_path / "opener.py"
    other_opener.write_text(assets.opener_path().read_text() + "\n# changed\n")
    second = _register(client, samples[:1], tmp_path, opener=other_opener)
    assert second.created and second.dataset_key != first.dataset_key
    private = _register(client, samples[:1], tmp_path, permissions={"public": True, "authorized_ids": []})
    assert private.created, "permissions are part of what identifies a dataset"


@pytest.mark.parametrize("fault", ["crash", "crash-before", "lost", "unsent"])
def test_an_interrupted_registration_resumes_without_duplicates(
    samples: list[Path], tmp_path: Path, fault: str, no_pauses: list[float]
):
    client = FakeClient()
    client.faults[("add_data_samples", 2)] = fault
    if fault.startswith("crash"):
        with pytest.raises(RuntimeError):
            _register(client, samples, tmp_path)
        ledger = SampleLedger.for_dataset(tmp_path, client.url, next(iter(client.datasets))).load()
        assert len(ledger.samples) == 2 and ledger.pending is not None and len(ledger.pending.hashes) == 2
        result = _register(client, samples, tmp_path)
    else:
        result = _register(client, samples, tmp_path)  # resolved within the same call
    assert len(set(result.sample_keys)) == 5
    assert sorted(_all_sample_keys(client)) == sorted(result.sample_keys), "exactly n samples, no duplicate"
    resent = fault in ("crash-before", "unsent")
    assert client.calls["add_data_samples"] == (4 if resent else 3)
    if fault == "unsent":
        assert len(no_pauses) == steps.assets.RECONCILE_CHECKS - 1, "looked a few times before resending"


def test_a_batch_in_doubt_twice_stays_pending_and_the_next_run_adopts_it_if_it_landed_late(
    samples: list[Path], tmp_path: Path
):
    client = FakeClient()
    client.faults[("add_data_samples", 1)] = "unsent"
    client.faults[("add_data_samples", 2)] = "unsent"
    with pytest.raises(exc.AssetMaybeCreatedError):
        _register(client, samples[:2], tmp_path)
    dataset_key = next(iter(client.datasets))
    ledger = SampleLedger.for_dataset(tmp_path, client.url, dataset_key).load()
    assert ledger.pending is not None and ledger.samples == {}
    late = [str(uuid.uuid4()), str(uuid.uuid4())]  # the second request was applied after the step gave up
    client.datasets[dataset_key]["data_sample_keys"].extend(late)
    result = _register(client, samples[:2], tmp_path)
    assert client.calls["add_data_samples"] == 2, "nothing sent: the pending batch was found applied"
    assert sorted(result.sample_keys) == sorted(late) and result.new_sample_keys == []


def test_a_batch_in_doubt_that_never_landed_is_sent_by_the_next_run(samples: list[Path], tmp_path: Path):
    client = FakeClient()
    client.faults[("add_data_samples", 1)] = "unsent"
    client.faults[("add_data_samples", 2)] = "unsent"
    with pytest.raises(exc.AssetMaybeCreatedError):
        _register(client, samples[:2], tmp_path)
    result = _register(client, samples[:2], tmp_path)
    assert client.calls["add_data_samples"] == 3
    assert sorted(result.new_sample_keys) == sorted(_all_sample_keys(client)) and len(result.sample_keys) == 2


def test_samples_added_by_someone_else_during_a_doubt_stop_the_step(samples: list[Path], tmp_path: Path):
    client = FakeClient()
    client.faults[("add_data_samples", 2)] = "foreign"
    with pytest.raises(steps.ReconciliationError, match="unknown to the ledger"):
        _register(client, samples, tmp_path)
    assert client.calls["add_data_samples"] == 2, "nothing resent when the counts do not add up"


def test_samples_already_in_the_dataset_before_a_doubt_do_not_confuse_reconciliation(
    samples: list[Path], tmp_path: Path
):
    client = FakeClient()
    first = _register(client, samples[:1], tmp_path)
    client.datasets[first.dataset_key]["data_sample_keys"].append(str(uuid.uuid4()))  # linked by someone
    client.faults[("add_data_samples", 2)] = "lost"
    result = _register(client, samples[:3], tmp_path)
    assert len(result.new_sample_keys) == 2
    assert len(_all_sample_keys(client)) == 4


def test_a_refused_batch_is_not_left_pending(samples: list[Path], tmp_path: Path):
    client = FakeClient()
    client.faults[("add_data_samples", 1)] = "refused"
    with pytest.raises(exc.InvalidRequest):
        _register(client, samples[:1], tmp_path)
    ledger = SampleLedger.for_dataset(tmp_path, client.url, next(iter(client.datasets))).load()
    assert ledger.pending is None and ledger.samples == {}


def test_ledger_entries_unknown_to_the_server_are_registered_again(samples: list[Path], tmp_path: Path):
    client = FakeClient()
    first = _register(client, samples[:2], tmp_path)
    client.datasets[first.dataset_key]["data_sample_keys"].remove(first.sample_keys[0])
    again = _register(client, samples[:2], tmp_path)
    assert again.new_sample_keys and again.sample_keys[1] == first.sample_keys[1]
    assert again.sample_keys[0] != first.sample_keys[0]


def test_a_corrupt_ledger_is_an_error_not_a_reset(samples: list[Path], tmp_path: Path):
    client = FakeClient()
    first = _register(client, samples[:1], tmp_path)
    ledger = SampleLedger.for_dataset(tmp_path, client.url, first.dataset_key)
    ledger.path.write_text("{not json")
    with pytest.raises(steps.LedgerError, match=str(ledger.path)):
        _register(client, samples[:1], tmp_path)


def test_ledger_file_layout(samples: list[Path], tmp_path: Path):
    client = FakeClient()
    result = _register(client, samples[:3], tmp_path)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.json"))
    ledger = SampleLedger.for_dataset(tmp_path, client.url, result.dataset_key)
    assert files == [ledger.path.relative_to(tmp_path).as_posix()]
    body = json.loads(ledger.path.read_text())
    assert body["dataset_key"] == result.dataset_key and body["pending"] is None
    assert sorted(body["samples"].values()) == sorted(result.sample_keys)
    assert set(body["samples"]) == {steps.sample_fingerprint(p) for p in samples[:3]}
    assert not list(tmp_path.rglob("*.tmp")), "no temporary file left behind"


def test_default_ledger_dir_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("SUBSTRA_FLOWS_LEDGER_DIR", str(tmp_path / "here"))
    assert steps.default_ledger_dir() == tmp_path / "here"
    monkeypatch.delenv("SUBSTRA_FLOWS_LEDGER_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert steps.default_ledger_dir() == tmp_path / "cache" / "substra-flows" / "ledgers"


def test_add_data_samples_returns_the_keys_of_all_given_paths(samples: list[Path], tmp_path: Path):
    client = FakeClient()
    dataset = _register(client, samples[:2], tmp_path)
    keys = steps.add_data_samples(
        client, dataset_key=dataset.dataset_key, sample_paths=samples[1:4], batch_size=5, ledger_dir=tmp_path
    )
    assert keys[0] == dataset.sample_keys[1]
    assert len(set(keys)) == 3 and len(_all_sample_keys(client)) == 4
    assert steps.add_data_samples(client, dataset_key=dataset.dataset_key, sample_paths=[], ledger_dir=tmp_path) == []


def test_a_lost_dataset_creation_is_looked_up_before_resending(samples: list[Path], tmp_path: Path):
    client = FakeClient()
    client.faults[("add_dataset", 1)] = "lost"
    result = _register(client, samples[:1], tmp_path)
    assert result.created and len(client.datasets) == 1 and client.calls["add_dataset"] == 1

    other = FakeClient()
    other.faults[("add_dataset", 1)] = "unsent"
    _register(other, samples[:1], tmp_path / "other")
    assert len(other.datasets) == 1 and other.calls["add_dataset"] == 2


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("name", "", "''"),
        ("name", "n" * 101, "nnnn"),
        ("batch_size", 0, "0"),
        ("batch_size", True, "True"),
        ("opener", "/does/not/exist.py", "/does/not/exist.py"),
        ("sample_paths", "/a/single/string", "/a/single/string"),
        ("metadata", {steps.FINGERPRINT_KEY: "x"}, steps.FINGERPRINT_KEY),
        ("permissions", {"public": "maybe"}, "maybe"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(
    samples: list[Path], tmp_path: Path, field: str, value: Any, shown: str
):
    client = FakeClient()
    kwargs: dict[str, Any] = {"name": "ds", "opener": assets.opener_path(), "sample_paths": samples[:1]}
    kwargs[field] = value
    kwargs.setdefault("batch_size", 2)
    with pytest.raises(exc.SpecValidationError) as raised:
        steps.register_dataset(client, ledger_dir=tmp_path, **kwargs)
    assert field in str(raised.value) and shown in str(raised.value)
    assert client.calls == {} and not list(tmp_path.iterdir())


def test_a_missing_or_empty_sample_folder_is_named(samples: list[Path], tmp_path: Path):
    client = FakeClient()
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad in (tmp_path / "missing", empty, assets.opener_path()):
        with pytest.raises(exc.LoadDataException) as raised:
            steps.add_data_samples(
                client, dataset_key=str(uuid.uuid4()), sample_paths=[*samples[:1], bad], ledger_dir=tmp_path / "l"
            )
        assert raised.value.field == "sample_paths.1" and str(bad) in str(raised.value)
    with pytest.raises(exc.KeyFormatError):
        steps.add_data_samples(client, dataset_key="nope", sample_paths=samples[:1])
    assert client.calls == {}


# -- functions ------------------------------------------------------------------------------------------


def _function_folder(root: Path, body: str = "print('hi')\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(assets.dockerfile("train"))
    (root / "function.py").write_text(body)
    return root


def _register_function(client: FakeClient, archive: Path, **kwargs: Any) -> steps.RegisteredFunction:
    args: dict[str, Any] = {
        "name": "train",
        "archive": archive,
        "inputs": assets.function_inputs("train"),
        "outputs": assets.function_outputs("train"),
    }
    args.update(kwargs)
    return steps.register_function(client, **args)


def test_register_function_twice_gives_one_function(tmp_path: Path):
    client = FakeClient()
    archive = assets.build_function_archive("train", tmp_path)
    first = _register_function(client, archive)
    second = _register_function(client, archive, description=assets.write_description(tmp_path / "d.md", "t"))
    assert first.created and not second.created and first.function_key == second.function_key
    assert client.calls == {"add_function": 1}
    assert first.to_dict() == {"function_key": first.function_key, "created": True}


def test_a_folder_is_archived_reproducibly(tmp_path: Path):
    client = FakeClient()
    first = _register_function(client, _function_folder(tmp_path / "fn"))
    copy = _function_folder(tmp_path / "copy")  # same files, other mtimes and place
    assert _register_function(client, copy).function_key == first.function_key
    changed = _register_function(client, _function_folder(tmp_path / "changed", body="print('bye')\n"))
    assert changed.created


def test_a_changed_signature_is_a_new_function(tmp_path: Path):
    client = FakeClient()
    archive = assets.build_function_archive("train", tmp_path)
    first = _register_function(client, archive)
    inputs = assets.function_inputs("train")
    inputs["model"]["optional"] = False
    assert _register_function(client, archive, inputs=inputs).function_key != first.function_key
    # the SDK's list shape is the same signature as the keyed shape
    as_list = [{"identifier": k, **v} for k, v in assets.function_inputs("train").items()]
    assert _register_function(client, archive, inputs=as_list).function_key == first.function_key


def test_a_lost_function_creation_is_not_duplicated(tmp_path: Path):
    client = FakeClient()
    client.faults[("add_function", 1)] = "lost"
    result = _register_function(client, assets.build_function_archive("train", tmp_path))
    assert result.created and len(client.functions) == 1


@pytest.mark.parametrize(
    ("case", "field"),
    [("missing", "archive"), ("no dockerfile", "archive"), ("not an archive", "archive"), ("bad kind", "inputs")],
)
def test_bad_function_arguments_are_refused_before_any_request(tmp_path: Path, case: str, field: str):
    client = FakeClient()
    kwargs: dict[str, Any] = {}
    if case == "missing":
        archive = tmp_path / "missing.tar.gz"
    elif case == "no dockerfile":
        archive = tmp_path / "folder"
        archive.mkdir()
        (archive / "function.py").write_text("x")
    elif case == "not an archive":
        archive = tmp_path / "function.py"
        archive.write_text("x")
    else:
        archive = assets.build_function_archive("train", tmp_path)
        kwargs["inputs"] = {"datasamples": {"kind": "ASSET_NOPE", "optional": False, "multiple": True}}
    with pytest.raises(exc.SpecValidationError) as raised:
        _register_function(client, archive, **kwargs)
    assert field in str(raised.value)
    assert client.calls == {}
