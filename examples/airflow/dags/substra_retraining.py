"""Daily federated retraining on Substra.

Every day: register (or find) each organization's dataset and add that day's samples, register
(or find) the functions of a federated logistic regression, submit a compute plan (train on every
organization, aggregate, predict and score on each organization's test data), wait for it in the
triggerer (deferrable), read its performances, and gate the new model against previous days.

The same file runs against the local node or a real deployment; everything is configuration.

Parse time (environment; they shape the DAG):
  SUBSTRA_RETRAINING_CONN_IDS      comma-separated Airflow connection ids, one per organization;
                                   the first one submits the plan (default: substra_default, the
                                   hook's default connection: one organization)
  SUBSTRA_RETRAINING_DEFERRABLE    wait for the plan in the triggerer (default: true)
  SUBSTRA_RETRAINING_POLL_SECONDS  seconds between two status requests while waiting (default: 10)
  SUBSTRA_RETRAINING_RETRIES       retries of a failed task (default: 1); every step is safe to rerun
  SUBSTRA_RETRAINING_RETRY_DELAY   seconds before a retry (default: 30)

Run time (Airflow Variables ``substra_retraining_<name>``, else environment ``SUBSTRA_RETRAINING_<NAME>``):
  data_dir       folder holding ``org-<i>/<YYYY-MM-DD>/{train,test}/<sample folder>/`` (i from 1)
  generate_data  "true": write synthetic samples for the day when its folder is missing (default: true)
  functions_dir  folder holding ``<name>.tar.gz`` (or ``<name>/``) for train, aggregate, predict, score;
                 default: the example archives, built under data_dir/functions
  rounds         federated rounds per plan (default: 2)
  evaluate_every_round  "true": score every round's model, not only the last one (learning curves)
  min_improvement  a new plan must beat the best previous one by this much (default: 0)
  models_dir     where a promoted model is saved, as ``<models_dir>/<YYYY-MM-DD>/`` (default: data_dir/models)
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Variable, get_current_context, task

from airflow_provider.hooks.substra import DEFAULT_CONN_ID, SubstraHook
from airflow_provider.operators.substra import (
    SubstraAddComputePlanOperator,
    SubstraAddDataSamplesOperator,
    SubstraAddFunctionOperator,
    SubstraGetPerformancesOperator,
    SubstraRegisterDatasetOperator,
)

_REPO = Path(__file__).resolve().parents[3]
if (_REPO / "examples" / "assets").is_dir() and str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))  # the example assets live next to this example, in the repository

from examples import assets  # noqa: E402  (needs the path set just above)

DAG_ID = "substra_retraining"
PLAN_TASK_ID = "add_compute_plan"
FUNCTIONS = ("train", "aggregate", "predict", "score")
START = pendulum.datetime(2025, 1, 1, tz="UTC")
log = logging.getLogger(__name__)


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


CONN_IDS = [c.strip() for c in os.environ.get("SUBSTRA_RETRAINING_CONN_IDS", DEFAULT_CONN_ID).split(",")]
CONN_IDS = [c for c in CONN_IDS if c]
DEFERRABLE = _env_flag("SUBSTRA_RETRAINING_DEFERRABLE", True)
POLL_SECONDS = float(os.environ.get("SUBSTRA_RETRAINING_POLL_SECONDS", "10"))
RETRIES = int(os.environ.get("SUBSTRA_RETRAINING_RETRIES", "1"))
RETRY_DELAY = float(os.environ.get("SUBSTRA_RETRAINING_RETRY_DELAY", "30"))
DEFAULTS = {
    "data_dir": str(Path(tempfile.gettempdir()) / "substra-retraining"),
    "generate_data": "true",
    "functions_dir": "",
    "rounds": "2",
    "evaluate_every_round": "false",
    "min_improvement": "0",
    "models_dir": "",
}


def setting(name: str) -> str:
    """A run-time setting: Variable ``substra_retraining_<name>``, else env ``SUBSTRA_RETRAINING_<NAME>``."""
    fallback = os.environ.get(f"SUBSTRA_RETRAINING_{name.upper()}", DEFAULTS[name])
    return str(Variable.get(f"substra_retraining_{name}", default=fallback))


def flag(name: str) -> bool:
    """A yes/no run-time setting."""
    return setting(name).strip().lower() in ("1", "true", "yes", "on")


def prepared(path: str) -> str:
    """A template reading ``prepare_data``'s XCom at ``path`` (e.g. ``['opener']``)."""
    return "{{ ti.xcom_pull('prepare_data')" + path + " }}"


def _day_index(logical_date: Any) -> int:
    """Days since the DAG's start: which day of synthetic data to generate."""
    return max(0, (pendulum.instance(logical_date).date() - START.date()).days)


with DAG(
    dag_id=DAG_ID,
    description="Daily federated retraining on Substra, gated on the previous days' scores",
    schedule="@daily",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    default_args={"retries": RETRIES, "retry_delay": pendulum.duration(seconds=RETRY_DELAY)},
    tags=["substra", "federated-learning"],
    doc_md=__doc__,
) as dag:

    @task
    def prepare_data() -> dict[str, Any]:
        """Locate (or, for demos, generate) the day's sample folders and the function archives;
        ask each organization for its id (the datasets are shared with every organization)."""
        context = get_current_context()
        ds = context["ds"]
        data_dir = Path(setting("data_dir"))
        generate = flag("generate_data")
        orgs = []
        for index, conn_id in enumerate(CONN_IDS, start=1):
            day_dir = data_dir / f"org-{index}" / ds
            folders = {split: day_dir / split for split in ("train", "test")}
            for split, folder in folders.items():
                if not folder.is_dir() or not any(folder.iterdir()):
                    if not generate:
                        raise FileNotFoundError(f"no {split} samples for {ds} in {folder}")
                    assets.generate_samples(
                        index,
                        folder,
                        day=_day_index(context["logical_date"]),
                        split=split,
                        n_samples=2 if split == "train" else 1,
                    )
            hook = SubstraHook(conn_id)
            try:
                organization_id = hook.get_conn().organization_info().organization_id
            finally:
                hook.close()
            paths = {split: str(folder) for split, folder in folders.items()}
            orgs.append({"conn_id": conn_id, "organization_id": organization_id, **paths})
        functions_dir = Path(setting("functions_dir") or data_dir / "functions")
        functions = {}
        for name in FUNCTIONS:
            archive = functions_dir / f"{name}.tar.gz"
            if not archive.exists() and (functions_dir / name).is_dir():
                archive = functions_dir / name
            elif not archive.exists():
                archive = assets.build_function_archive(name, functions_dir)
            description = functions_dir / f"{name}.md"
            if not description.exists():
                assets.write_description(description, f"retraining {name}")
            functions[name] = {"archive": str(archive), "description": str(description)}
        return {
            "orgs": orgs,
            "organization_ids": [o["organization_id"] for o in orgs],
            "functions": functions,
            "opener": str(assets.opener_path()),
            "dataset_description": str(assets.write_description(data_dir / "dataset.md", "retraining dataset")),
        }

    data = prepare_data()
    shared_with_all = {"public": False, "authorized_ids": prepared("['organization_ids']")}

    datasets = []
    for i, conn_id in enumerate(CONN_IDS):
        train = SubstraRegisterDatasetOperator(
            task_id=f"register_dataset_org{i + 1}",
            substra_conn_id=conn_id,
            name=f"retraining dataset org-{i + 1}",
            opener=prepared("['opener']"),
            description=prepared("['dataset_description']"),
            samples_dir=prepared(f"['orgs'][{i}]['train']"),
            permissions=shared_with_all,
            logs_permission=shared_with_all,
            metadata={"pipeline": DAG_ID},
        )
        test = SubstraAddDataSamplesOperator(
            task_id=f"add_test_samples_org{i + 1}",
            substra_conn_id=conn_id,
            dataset_key=f"{{{{ ti.xcom_pull('register_dataset_org{i + 1}')['dataset_key'] }}}}",
            samples_dir=prepared(f"['orgs'][{i}]['test']"),
        )
        data >> train >> test
        datasets.append(test)

    functions = []
    for name in FUNCTIONS:
        function = SubstraAddFunctionOperator(
            task_id=f"add_function_{name}",
            substra_conn_id=CONN_IDS[0],
            name=f"retraining {name}",
            archive=prepared(f"['functions']['{name}']['archive']"),
            description=prepared(f"['functions']['{name}']['description']"),
            inputs=assets.function_inputs(name),
            outputs=assets.function_outputs(name),
            permissions={"public": True, "authorized_ids": []},
        )
        data >> function
        functions.append(function)

    @task
    def build_plan() -> dict[str, Any]:
        """The day's compute plan, without a key: the plan task submits it under its run's current
        attempt (a retried or cleared run finds the plan it submitted, or submits the next attempt
        after a failed or canceled one), and its tasks are named, so each attempt has keys of its own."""
        context = get_current_context()
        ti = context["ti"]
        info = ti.xcom_pull(task_ids="prepare_data")
        orgs = []
        for i, org in enumerate(info["orgs"], start=1):
            dataset = ti.xcom_pull(task_ids=f"register_dataset_org{i}")
            orgs.append(
                {
                    "organization_id": org["organization_id"],
                    "dataset_key": dataset["dataset_key"],
                    "train_sample_keys": dataset["sample_keys"],
                    "test_sample_keys": ti.xcom_pull(task_ids=f"add_test_samples_org{i}"),
                }
            )
        function_keys = {n: ti.xcom_pull(task_ids=f"add_function_{n}")["function_key"] for n in FUNCTIONS}
        rounds = int(setting("rounds"))
        return assets.build_federated_plan(
            name=f"retraining {context['ds']}",
            function_keys=function_keys,
            orgs=orgs,
            rounds=rounds,
            tag=DAG_ID,
            metadata={"pipeline": DAG_ID, "ds": context["ds"], "rounds": str(rounds)},
            evaluate_every_round=flag("evaluate_every_round"),
        )

    plan_spec = build_plan()
    [*datasets, *functions] >> plan_spec

    plan = SubstraAddComputePlanOperator(
        task_id=PLAN_TASK_ID,
        substra_conn_id=CONN_IDS[0],
        compute_plan=plan_spec,
        deferrable=DEFERRABLE,
        polling_period_seconds=POLL_SECONDS,
        timeout=6 * 3600,
    )

    performances = SubstraGetPerformancesOperator(
        task_id="get_performances",
        substra_conn_id=CONN_IDS[0],
        compute_plan_key=plan.output,
    )
    plan >> performances

    @task
    def quality_gate(compute_plan_key: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Compare the day's plan with every earlier plan of this pipeline; promote it only if it is better."""
        from substra_flows import steps

        hook = SubstraHook(CONN_IDS[0])
        try:
            entries = steps.leaderboard(
                hook.get_conn(),
                metadata_filters=[{"key": "pipeline", "type": "is", "value": DAG_ID}],
                identifier="performance",
            )
        finally:
            hook.close()
        decision = steps.quality_gate(compute_plan_key, entries, min_improvement=float(setting("min_improvement")))
        log.info("quality gate: %s: %s", "PROMOTE" if decision.promote else "KEEP PREVIOUS", decision.reason)
        return {
            "compute_plan_key": compute_plan_key,
            "promote": decision.promote,
            "reason": decision.reason,
            "candidate_score": decision.candidate_score,
            "best_previous_score": decision.best_previous_score,
            "best_previous_key": decision.best_previous_key,
            "performances": len(rows),
        }

    @task
    def promote(gate: dict[str, Any], plan: dict[str, Any]) -> str | None:
        """Save the plan's final model under ``<models_dir>/<ds>/`` when the gate promoted it."""
        if not gate["promote"]:
            log.info("model not promoted: %s", gate["reason"])
            return None
        last_round = int(plan["metadata"]["rounds"]) - 1
        # the gate judged the attempt the plan task waited for; its tasks' keys derive from its key
        final_aggregate = assets.task_key(gate["compute_plan_key"], f"aggregate/{last_round}")
        folder = Path(setting("models_dir") or Path(setting("data_dir")) / "models") / plan["metadata"]["ds"]
        folder.mkdir(parents=True, exist_ok=True)
        hook = SubstraHook(CONN_IDS[0])
        try:
            path = hook.get_conn().download_model_from_task(final_aggregate, "model", folder)
        finally:
            hook.close()
        log.info("model of %s promoted to %s", final_aggregate, path)
        return str(path)

    promote(quality_gate(plan.output, performances.output), plan_spec)
