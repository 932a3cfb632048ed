"""``import substra_flows`` loads the core only: no airflow, prefect or official substra SDK."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

SRC = pathlib.Path(__file__).resolve().parents[2] / "src"
FORBIDDEN = ("airflow", "prefect", "substra", "substratools")


def test_import_leaves_orchestrators_and_sdk_unloaded():
    code = (
        "import json, sys; import substra_flows; "
        "from substra_flows import client, transport, schemas, models, waiting, config, exceptions; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert "substra_flows" in loaded
    assert not loaded & set(FORBIDDEN), loaded & set(FORBIDDEN)


def test_core_modules_import_only_allowed_third_parties():
    allowed = {"requests", "pydantic", "tenacity", "yaml", "urllib3", "substra_flows"}
    package = SRC / "substra_flows"
    core = ["__init__", "transport", "schemas", "models", "waiting", "config", "exceptions"]
    files = [package / f"{name}.py" for name in core] + sorted((package / "client").glob("*.py"))
    stdlib = set(sys.stdlib_module_names)
    for path in files:
        name = path.relative_to(package).as_posix()
        source = path.read_text()
        for line in source.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from") and not line.startswith((" ", "\t")):
                top = words[1].split(".")[0]
                assert top in stdlib or top in allowed or top == "__future__", f"{name} imports {top}"


def test_every_public_name_resolves_lazily_to_its_module():
    """``substra_flows.X`` is loaded on first use; each name of ``__all__`` must resolve to the real object."""
    code = (
        "import json, substra_flows, sys; "
        "names = {n: f'{type(getattr(substra_flows, n)).__name__}' for n in substra_flows.__all__}; "
        "print(json.dumps([names, substra_flows.SubstraClient is sys.modules['substra_flows.client'].SubstraClient]))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    names, same = json.loads(result.stdout.strip().splitlines()[-1])
    assert same is True
    assert names["exceptions"] == names["models"] == "module"
    assert names["SubstraClient"] == "type" and names["ComputeTaskStatus"] == "EnumType"
