"""Cassette tests of every public method of SubstraClient, with its main error path.

Each module registers what its tests share (datasets, functions, small plans) once, in a
module-scoped fixture recorded in its own cassette, ``_setup.yaml``, next to the tests' own
cassettes (see :func:`setup_cassette`). The keys the server chose while recording are replayed
from that cassette, so the tests' cassettes, recorded in the same run, refer to them.

Re-record a whole module at a time (a module's setup cassette and its tests' cassettes go
together): ``scripts/record-cassettes tests/cassette`` or ``scripts/record-cassettes
tests/cassette/test_client_execution.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import vcr
from vcr.cassette import Cassette

from examples import assets
from substra_flows import SubstraClient
from tests.recording import Target, recording, stable_key, vcr_settings

SETUP_CASSETTE = "_setup"
MARKER = "substra-flows example: deliberate failure"
PUBLIC = {"public": True, "authorized_ids": []}


@contextlib.contextmanager
def setup_cassette(
    request: pytest.FixtureRequest, name: str = SETUP_CASSETTE, settings: dict[str, Any] | None = None
) -> Iterator[Cassette]:
    """Record (or replay) a module's shared setup in ``<module cassette dir>/<name>.yaml``.

    Same matching and scrubbing as the tests' cassettes (``settings``: the module's ``vcr_config``
    when it differs from the shared one), and the record mode pytest was given
    (``rewrite`` deletes the file first, as pytest-recording does). On replay the setup must
    consume every recorded exchange, in order: anything else means the setup is not deterministic.
    """
    mode = request.config.getoption("--record-mode") or "none"
    folder = Path(request.getfixturevalue("vcr_cassette_dir"))
    path = folder / f"{name}.yaml"
    if mode == "rewrite":
        _check_whole_module_selected(request)
        path.unlink(missing_ok=True)
        mode = "new_episodes"
    if mode == "none" and not path.exists():
        pytest.fail(f"{path} is missing: re-record this module (scripts/record-cassettes {request.path})")
    recorder = vcr.VCR(
        cassette_library_dir=str(folder), record_mode=mode, path_transformer=vcr.VCR.ensure_suffix(".yaml")
    )
    with recorder.use_cassette(name, **(settings or vcr_settings())) as cassette:
        yield cassette
        if mode == "none":
            assert cassette.all_played, f"{path}: the setup did not replay every recorded exchange"


def _check_whole_module_selected(request: pytest.FixtureRequest) -> None:
    """Refuse to rewrite a setup cassette for a few tests: the others' cassettes would then name
    assets (server-chosen keys) that the new setup no longer creates."""
    module = request.module
    defined = {name for name, value in vars(module).items() if name.startswith("test_") and callable(value)}
    selected = {
        getattr(item, "originalname", item.name)  # parametrized tests count once, by their function name
        for item in request.session.items
        if getattr(item, "module", None) is module
    }
    if selected != defined:
        pytest.fail(
            f"re-record {request.path.name} as a whole (not {len(selected)} of its {len(defined)} tests): "
            "its setup cassette is shared by all its tests"
        )


def client_for(target: Target, **kwargs: Any) -> SubstraClient:
    """A client of one organization (a fresh requests session: pooled connections never cross cassettes)."""
    return SubstraClient(url=target.url, token=target.token, **kwargs)


class RequestLog:
    """Every request a client sends, as ``(method, path)``: counts calls, in recording and replay alike."""

    def __init__(self, client: SubstraClient) -> None:
        self.calls: list[tuple[str, str]] = []
        client.transport.session.hooks["response"].append(self._record)

    def _record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.calls.append((str(response.request.method), urlsplit(str(response.request.url)).path))

    def count(self, method: str, path_end: str) -> int:
        """Requests with this method whose path ends with ``path_end``."""
        return sum(1 for m, p in self.calls if m == method and p.endswith(path_end))


def function_spec(name: str, workdir: Path, *, title: str, permissions: Mapping[str, Any] = PUBLIC) -> dict[str, Any]:
    """Spec of one example function (same name, same archive bytes)."""
    folder = workdir / "functions" / title.replace(" ", "-")
    return {
        "name": title,
        "file": assets.build_function_archive(name, folder),
        "description": assets.write_description(folder / "description.md", title),
        "permissions": dict(permissions),
        "inputs": [{"identifier": i, **v} for i, v in assets.function_inputs(name).items()],
        "outputs": [{"identifier": i, **v} for i, v in assets.function_outputs(name).items()],
    }


def dataset_spec(
    title: str,
    workdir: Path,
    *,
    authorized_ids: Sequence[str] = (),
    logs_ids: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Spec of an example dataset, private to ``authorized_ids`` (plus its owner)."""
    spec: dict[str, Any] = {
        "name": title,
        "data_opener": assets.opener_path(),
        "description": assets.write_description(workdir / "datasets" / f"{title.replace(' ', '-')}.md", title),
        "permissions": {"public": False, "authorized_ids": list(authorized_ids)},
        "logs_permission": {"public": False, "authorized_ids": list(logs_ids)},
    }
    if metadata:
        spec["metadata"] = dict(metadata)
    return spec


def register_org_data(
    client: SubstraClient,
    org_index: int,
    organization_id: str,
    workdir: Path,
    *,
    title: str,
    authorized_ids: Sequence[str],
    logs_ids: Sequence[str],
) -> dict[str, Any]:
    """One organization's dataset with 2 train samples and 1 test sample, in build_federated_plan's shape."""
    dataset_key = client.add_dataset(dataset_spec(title, workdir, authorized_ids=authorized_ids, logs_ids=logs_ids))
    folder = workdir / "samples" / title.replace(" ", "-")
    train = assets.generate_samples(org_index, folder, split="train")
    test = assets.generate_samples(org_index, folder, split="test", n_samples=1)
    train_keys = client.add_data_samples({"paths": train, "data_manager_keys": [dataset_key]})
    test_keys = [client.add_data_sample({"path": test[0], "data_manager_keys": [dataset_key]})]
    return {
        "organization_id": organization_id,
        "dataset_key": dataset_key,
        "train_sample_keys": sorted(train_keys),
        "test_sample_keys": test_keys,
    }


def noop_task(task_id: str, function_key: str, worker: str, *, parent: str | None = None, **extra: Any) -> dict:
    """A plan task running the ``noop`` function (optionally on its parent's model)."""
    inputs = (
        [{"identifier": "model", "parent_task_key": parent, "parent_task_output_identifier": "model"}] if parent else []
    )
    return {
        "task_id": task_id,
        "function_key": function_key,
        "worker": worker,
        "inputs": inputs,
        "outputs": {"model": {"permissions": {"public": False, "authorized_ids": [worker]}}},
        **extra,
    }


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def unknown_key(*parts: str) -> str:
    """A key no asset has (stable, so its 404 replays)."""
    return stable_key("unknown", *parts)


__all__ = [
    "MARKER",
    "PUBLIC",
    "SETUP_CASSETTE",
    "RequestLog",
    "client_for",
    "dataset_spec",
    "function_spec",
    "noop_task",
    "recording",
    "register_org_data",
    "setup_cassette",
    "sha256",
    "stable_key",
    "unknown_key",
]
