"""get_provider_info: its contents, the runtime schema, the entry point, and Airflow's discovery."""

from __future__ import annotations

import importlib
import json
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema

import airflow_provider
from airflow_provider import get_provider_info


def test_entry_point_points_at_get_provider_info() -> None:
    found = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("airflow_provider")]
    assert [ep.value for ep in found] == ["airflow_provider:get_provider_info"]
    assert found[0].load() is get_provider_info
    assert found[0].dist.metadata["name"] == get_provider_info()["package-name"] == "substra-flows"


def test_provider_info_validates_against_airflows_runtime_schema() -> None:
    import airflow

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_provider_info_contents() -> None:
    info = get_provider_info()
    assert info["name"] == "Substra"
    assert info["versions"] == [airflow_provider.__version__]
    sections = ("operators", "sensors", "hooks", "triggers")
    modules = {section: [m for item in info[section] for m in item["python-modules"]] for section in sections}
    assert modules == {
        "operators": ["airflow_provider.operators.substra"],
        "sensors": ["airflow_provider.sensors.substra"],
        "hooks": ["airflow_provider.hooks.substra"],
        "triggers": ["airflow_provider.triggers.substra"],
    }
    (conn,) = info["connection-types"]
    assert conn["connection-type"] == "substra"
    assert conn["hook-class-name"] == "airflow_provider.hooks.substra.SubstraHook"
    assert info["extra-links"] == ["airflow_provider.links.substra.SubstraComputePlanLink"]
    assert set(conn["conn-fields"]) == {
        "frontend_url",
        "insecure",
        "connect_timeout",
        "read_timeout",
        "retry_timeout",
        "max_attempts",
        "backoff",
        "backoff_max",
        "total_timeout",
        "max_download_bytes",
    }
    for name, spec in conn["conn-fields"].items():
        assert spec["label"] and spec["schema"]["type"][1] == "null", name
    behaviour = conn["ui-field-behaviour"]
    assert set(behaviour["hidden-fields"]) == {"schema", "port", "extra"}
    assert behaviour["relabeling"]["host"] == "Substra API URL"


def test_every_declared_class_and_module_imports() -> None:
    info = get_provider_info()
    for section in ("operators", "sensors", "hooks", "triggers"):
        for item in info[section]:
            for module in item["python-modules"]:
                importlib.import_module(module)
    for path in [info["connection-types"][0]["hook-class-name"], *info["extra-links"]]:
        module, _, name = path.rpartition(".")
        assert getattr(importlib.import_module(module), name)


def test_airflow_discovers_the_provider_hook_fields_and_behaviour() -> None:
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    manager = ProvidersManager()
    assert "substra-flows" in manager.providers
    hook = ProvidersManagerTaskRuntime().hooks["substra"]
    assert hook is not None
    assert (hook.hook_class_name, hook.connection_id_attribute_name) == (
        "airflow_provider.hooks.substra.SubstraHook",
        "substra_conn_id",
    )
    widgets = manager.connection_form_widgets
    assert "extra__substra__frontend_url" in widgets
    assert widgets["extra__substra__insecure"].field["schema"]["type"] == ["boolean", "null"]
    behaviour = manager.field_behaviours["substra"]
    assert "extra" in behaviour["hidden_fields"]
    assert "extra__substra__frontend_url" in behaviour["placeholders"]
    assert "airflow_provider.links.substra.SubstraComputePlanLink" in manager.extra_links_class_names
    assert any(t.package_name == "substra-flows" for t in manager.trigger)
