"""Small functions for the node's isolation and supervision tests: code that sleeps, or spies.

Each is a substratools function registered from a tar.gz (Dockerfile + function.py) whose code the
test writes, so a spy can carry the paths it tries to read as constants (the task environment is
clean: nothing can be passed to it through variables).
"""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path
from typing import Any

from substra_flows import SubstraClient

PUBLIC = {"public": True, "authorized_ids": []}
MODEL_OUT = {"identifier": "model", "kind": "ASSET_MODEL", "multiple": False}
DATA_IN = [
    {"identifier": "datasamples", "kind": "ASSET_DATA_SAMPLE", "optional": False, "multiple": True},
    {"identifier": "opener", "kind": "ASSET_DATA_MANAGER", "optional": False, "multiple": False},
]
MODEL_IN = [{"identifier": "model", "kind": "ASSET_MODEL", "optional": True, "multiple": False}]

HEADER = """
import json
import os
import substratools as tools


def _write(path, value):
    with open(path, "w") as handle:
        json.dump(value, handle)
"""

SLEEP = """
@tools.register
def sleep(inputs, outputs, task_properties):
    import time
    time.sleep({seconds})
    _write(outputs["model"], {{"slept": {seconds}}})


@tools.register
def noop(inputs, outputs, task_properties):
    if "model" in inputs:  # a parent's model, read back (it may come from an executor since restarted)
        with open(inputs["model"]) as handle:
            json.load(handle)
    _write(outputs["model"], {{"rank": task_properties["rank"]}})
"""

FOOTER = """

if __name__ == "__main__":
    tools.execute()
"""


def register(
    client: SubstraClient,
    folder: Path,
    method: str,
    code: str,
    *,
    inputs: list[dict[str, Any]],
    permissions: dict[str, Any] = PUBLIC,
    build_lines: tuple[str, ...] = (),
) -> str:
    """Register a function whose ENTRYPOINT runs ``method`` of ``code`` (a model output), its
    Dockerfile holding ``build_lines`` (e.g. a RUN that fails) after the substratools install."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = "".join(f"{line}\n" for line in build_lines)
    dockerfile = (
        f"FROM python:3.11-slim\nRUN pip install substratools==1.0.0\n{extra}COPY function.py .\n"
        f'ENTRYPOINT ["python3", "function.py", "--function-name", "{method}"]\n'
    )
    entries = {"Dockerfile": dockerfile.encode(), "function.py": (HEADER + code + FOOTER).encode()}
    archive = folder / f"{method}-{uuid.uuid4().hex[:8]}.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    description = folder / "description.md"
    description.write_text(f"# {method}\n")
    return client.add_function(
        {
            "name": f"test {method}",
            "file": archive,
            "description": description,
            "permissions": permissions,
            "inputs": inputs,
            "outputs": [MODEL_OUT],
        }
    )


def task(key: str, function_key: str, worker: str, *, inputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A plan task with one private model output."""
    return {
        "task_id": key,
        "function_key": function_key,
        "worker": worker,
        "inputs": inputs or [],
        "outputs": {"model": {"permissions": {"public": False, "authorized_ids": [worker]}}},
    }


def parent_input(parent: str) -> list[dict[str, Any]]:
    """The ``model`` input of a task reading its parent's model."""
    return [{"identifier": "model", "parent_task_key": parent, "parent_task_output_identifier": "model"}]


#: the Dockerfile line of a function whose image cannot be built (the build output names it)
BROKEN_BUILD = "RUN echo installing-a-missing-dependency && exit 3"
OPENER_IN = [{"identifier": "opener", "kind": "ASSET_DATA_MANAGER", "optional": False, "multiple": False}]


def opener_task(key: str, function_key: str, worker: str, dataset_key: str) -> dict[str, Any]:
    """A plan task reading a dataset's opener (the orchestrator checks the owner may process it)."""
    opener = [{"identifier": "opener", "asset_key": dataset_key}]
    return task(key, function_key, worker, inputs=opener)
