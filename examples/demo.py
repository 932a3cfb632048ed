"""The main job: scheduled federated retraining on a local 2-organization Substra node, several days
in a row, first as the Prefect flow, then as the Airflow DAG.

    scripts/demo                       (or: .venv/bin/python -m examples.demo --days 3 --rounds 3)

Each day: ETL writes the day's new samples per organization; datasets and functions are found
(not duplicated) after day one and only the new samples are registered; a federated plan is
submitted with a key derived from the run and waited for (deferrably in Airflow); performances are
fetched and the plan ranked against previous days'; the gate promotes its model to
``models/<orchestrator>/<day>/`` only if it beats the best so far. The last day is then run once
more, as a scheduler would after a crash, to show that a rerun adds nothing to the node. Prints a
line per step, a final table, and writes a learning-curve plot to ``reports/retraining.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from substra_flows.local_node import LocalNode

REPO = Path(__file__).resolve().parents[1]
START_DATE = dt.date(2025, 1, 1)  # the DAG's start_date: day N runs for START_DATE + N days
ASSET_KINDS = ("datasets", "functions", "samples", "plans", "tasks")
TRAIN_SAMPLES, TEST_SAMPLES = 2, 1  # new samples per organization and day, in both pipelines


def step(message: str) -> None:
    """One progress line."""
    print(f"==> {message}", flush=True)


def asset_counts(node: LocalNode) -> dict[str, int]:
    """How many assets of each kind the node holds (reruns must not change them)."""
    store = node.store
    with store.lock:
        sizes = (store.datasets, store.functions, store.samples, store.plans, store.tasks)
        return {kind: len(assets) for kind, assets in zip(ASSET_KINDS, sizes, strict=True)}


@dataclass
class DayResult:
    """One pipeline run of one day, as both orchestrators report it."""

    orchestrator: str
    day: int
    plan: str
    performances: list[dict[str, Any]]
    gate: dict[str, Any]
    model: str | None
    rerun: bool = False
    added: dict[str, int] = field(default_factory=dict)  # assets this run added to the node

    @property
    def final_metrics(self) -> dict[str, float]:
        """The last round's metric per organization."""
        rounds = [int(r["round_idx"]) for r in self.performances if r.get("round_idx") is not None]
        last = max(rounds, default=0)
        return {r["worker"]: r["performance"] for r in self.performances if int(r.get("round_idx") or 0) == last}

    @property
    def mean(self) -> float:
        """Mean of the final metrics (what the gate compares)."""
        values = list(self.final_metrics.values())
        return sum(values) / len(values) if values else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON form, for ``--summary``."""
        return {
            "orchestrator": self.orchestrator,
            "day": self.day,
            "rerun": self.rerun,
            "plan": self.plan,
            "metrics": self.final_metrics,
            "mean": self.mean,
            "promoted": bool(self.gate.get("promote")),
            "gate": self.gate,
            "model": self.model,
            "added": self.added,
            "performances": self.performances,
        }


def _gate_text(gate: dict[str, Any], model: str | None) -> str:
    """The gate's verdict in one short line."""
    candidate, best = gate.get("candidate_score"), gate.get("best_previous_score")
    if gate.get("promote"):
        why = "first plan of the pipeline" if best is None else f"{candidate:.3f} beats the best previous {best:.3f}"
        return f"promoted ({why}): {model}"
    if best is None:
        return f"kept the previous model: {gate.get('reason', '')}"
    return f"kept the previous model ({candidate:.3f} does not beat the best previous {best:.3f})"


def report(result: DayResult, organizations: int, seconds: float) -> None:
    """The progress lines of one day: one per pipeline step."""
    name = f"{result.orchestrator} day {result.day}{' (rerun)' if result.rerun else ''}"

    def added(*kinds: str) -> str:
        return ", ".join(f"+{result.added.get(k, 0)} {k}" for k in kinds)

    metrics = ", ".join(f"{org} {value:.3f}" for org, value in sorted(result.final_metrics.items()))
    samples = f"{TRAIN_SAMPLES} train + {TEST_SAMPLES} test"
    step(f"{name} | etl      {samples} samples of the day for each of {organizations} organizations")
    step(f"{name} | register found or created; added to the node: {added('datasets', 'functions', 'samples')}")
    step(f"{name} | train    compute plan {result.plan} done; added: {added('plans', 'tasks')} ({seconds:.0f} s)")
    step(f"{name} | evaluate accuracy {metrics}, mean {result.mean:.3f}")
    step(f"{name} | gate     {_gate_text(result.gate, result.model)}")


def _days_with_rerun(days: Sequence[int], rerun: bool) -> list[tuple[int, bool]]:
    """The days to run, then the last one again when ``rerun``."""
    return [(d, False) for d in days] + ([(days[-1], True)] if rerun and days else [])


def run_prefect(
    node: LocalNode, days: Sequence[int], rounds: int, workdir: Path, models_dir: Path, *, rerun: bool = True
) -> Iterator[DayResult]:
    """The Prefect flow, once per day (then the last day again), in this process."""
    from examples.prefect.retraining import retraining
    from substra_flows.prefect import SubstraCredentials

    organizations = [SubstraCredentials(url=o.url, token=o.token) for o in node.organizations]
    for day, again in _days_with_rerun(days, rerun):
        before, started = asset_counts(node), time.perf_counter()
        outcome = retraining(
            organizations=organizations,
            day=day,
            pipeline="prefect-retraining",
            workdir=str(workdir / "prefect"),
            models_dir=str(models_dir / "prefect"),
            rounds=rounds,
            n_samples=TRAIN_SAMPLES,
            evaluate_every_round=True,
            polling_period=0.5,
        )
        after = asset_counts(node)
        result = DayResult(
            "prefect",
            day,
            outcome["compute_plan_key"],
            outcome["performances"],
            outcome["gate"],
            outcome["model_path"],
            rerun=again,
            added={k: after[k] - before[k] for k in ASSET_KINDS},
        )
        report(result, len(organizations), time.perf_counter() - started)
        yield result


def airflow_environment(node: LocalNode, workdir: Path, models_dir: Path, rounds: int) -> dict[str, str]:
    """Environment of the Airflow child: its own AIRFLOW_HOME, the example DAG, one connection per organization."""
    from examples.airflow.run_days import local_airflow_environment

    home = workdir / "airflow-home"
    home.mkdir(parents=True, exist_ok=True)
    conn_ids = [f"substra_demo_org{i}" for i in range(1, len(node.organizations) + 1)]
    env = {
        **os.environ,
        **local_airflow_environment(home, AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING"),
        "SUBSTRA_RETRAINING_CONN_IDS": ",".join(conn_ids),
        "SUBSTRA_RETRAINING_DEFERRABLE": "true",
        "SUBSTRA_RETRAINING_POLL_SECONDS": "0.5",
        "SUBSTRA_RETRAINING_DATA_DIR": str(workdir / "airflow-data"),
        "SUBSTRA_RETRAINING_ROUNDS": str(rounds),
        "SUBSTRA_RETRAINING_EVALUATE_EVERY_ROUND": "true",
        "SUBSTRA_RETRAINING_MODELS_DIR": str(models_dir / "airflow"),
        "SUBSTRA_FLOWS_LEDGER_DIR": str(workdir / "ledgers"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    for conn_id, org in zip(conn_ids, node.organizations, strict=True):
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
            {"conn_type": "substra", "host": org.url, "password": org.token}
        )
    return env


def run_airflow(
    node: LocalNode, days: Sequence[int], rounds: int, workdir: Path, models_dir: Path, *, rerun: bool = True
) -> Iterator[DayResult]:
    """The Airflow DAG with ``dag.test()`` per logical date (then the last date again), in one child
    process: Airflow reads its configuration when first imported, so it needs its own environment."""
    from examples.airflow.run_days import RESULT_PREFIX

    schedule = _days_with_rerun(days, rerun)
    dates = [(START_DATE + dt.timedelta(days=d)).isoformat() for d, _ in schedule]
    log_path = workdir / "airflow.log"
    env = airflow_environment(node, workdir, models_dir, rounds)
    command = [sys.executable, "-m", "examples.airflow.run_days", *dates]
    before, started = asset_counts(node), time.perf_counter()
    with (
        log_path.open("w") as log,
        subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True) as child,
    ):
        assert child.stdout is not None
        pending = iter(schedule)
        for line in child.stdout:
            if not line.startswith(RESULT_PREFIX):
                log.write(line)
                continue
            outcome = json.loads(line[len(RESULT_PREFIX) :])
            day, again = next(pending)
            if outcome["state"] != "success":
                child.kill()
                raise RuntimeError(f"the Airflow DAG run of {outcome['date']} failed: {outcome['task_states']}")
            after = asset_counts(node)
            result = DayResult(
                "airflow",
                day,
                outcome["compute_plan_key"],
                outcome["performances"],
                outcome["gate"],
                outcome["promoted_model"],
                rerun=again,
                added={k: after[k] - before[k] for k in ASSET_KINDS},
            )
            report(result, len(node.organizations), time.perf_counter() - started)
            before, started = after, time.perf_counter()
            yield result
    if child.returncode != 0:
        raise RuntimeError(f"the Airflow runs exited with {child.returncode}; see {log_path}:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def print_table(rows: Sequence[DayResult], org_ids: Sequence[str]) -> None:
    """The final table: day, plan, metric per organization and mean, promoted or not."""
    header = ["orchestrator", "day", "plan", *org_ids, "mean", "promoted"]
    lines = [
        [
            r.orchestrator,
            f"{r.day}{' (rerun)' if r.rerun else ''}",
            r.plan[:8],
            *(f"{r.final_metrics.get(o, float('nan')):.3f}" for o in org_ids),
            f"{r.mean:.3f}",
            "yes" if r.gate.get("promote") else "no",
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
    print()


def plot(rows: Sequence[DayResult], org_ids: Sequence[str], target: Path) -> Path:
    """Accuracy per round: one curve per organization (line style) per day (colour), a panel per orchestrator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    first_runs = [r for r in rows if not r.rerun]  # a rerun repeats its day's plan
    orchestrators = list(dict.fromkeys(r.orchestrator for r in first_runs))
    days = sorted({r.day for r in first_runs})
    colours = plt.get_cmap("viridis")
    figure, axes = plt.subplots(1, len(orchestrators), figsize=(6 * len(orchestrators), 4.5), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for ax, orchestrator in zip(axes[0], orchestrators, strict=True):
        for r in (r for r in first_runs if r.orchestrator == orchestrator):
            colour = colours(days.index(r.day) / max(1, len(days) - 1) * 0.85)
            for index, org in enumerate(org_ids):
                points = sorted((int(p["round_idx"]), p["performance"]) for p in r.performances if p["worker"] == org)
                if points:
                    label = f"day {r.day} {org}{' (promoted)' if r.gate.get('promote') else ''}"
                    xs, ys = zip(*points, strict=True)
                    ax.plot(xs, ys, styles[index % len(styles)], color=colour, marker="o", label=label)
        ax.set_title(f"{orchestrator}: test accuracy per round")
        ax.set_xlabel("round")
        ax.set_ylabel("accuracy")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=110)
    plt.close(figure)
    return target


RUNNERS: dict[str, Callable[..., Iterator[DayResult]]] = {"prefect": run_prefect, "airflow": run_airflow}


def run_demo(
    node: LocalNode,
    *,
    days: Sequence[int],
    rounds: int,
    out: Path,
    workdir: Path,
    orchestrators: Sequence[str] = ("prefect", "airflow"),
    rerun: bool = True,
) -> list[DayResult]:
    """Run the days in each orchestrator on ``node``; print the table and write the plot."""
    unknown = [o for o in orchestrators if o not in RUNNERS]
    if unknown:
        raise ValueError(f"orchestrators={list(orchestrators)!r}: unknown {unknown}, expected {sorted(RUNNERS)}")
    org_ids = [o.organization_id for o in node.organizations]
    rows: list[DayResult] = []
    for orchestrator in orchestrators:
        step(f"{orchestrator}: {len(days)} days of retraining{', then the last day again' if rerun else ''}")
        rows += RUNNERS[orchestrator](node, days, rounds, workdir, out / "models", rerun=rerun)
    step(f"assets on the node: {asset_counts(node)}")
    print_table(rows, org_ids)
    picture = plot(rows, org_ids, out / "reports" / "retraining.png")
    step(f"learning curves written to {picture}")
    return rows


def main(argv: list[str] | None = None) -> int:
    """Start the node, run the days in both orchestrators, print the table, write the plot."""
    parser = argparse.ArgumentParser(description="substra-flows demo: scheduled federated retraining")
    parser.add_argument("--days", type=int, default=3, help="consecutive days to run (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="federated rounds per plan (default 3)")
    parser.add_argument("--orchestrators", default="prefect,airflow", help="which faces to run, in order")
    parser.add_argument("--no-rerun", action="store_true", help="do not run the last day a second time")
    parser.add_argument("--out", default=".", help="where models/ and reports/ go (default: here)")
    parser.add_argument("--summary", help="also write the results as JSON to this file")
    parser.add_argument("--verbose", action="store_true", help="show Prefect's own logs")
    args = parser.parse_args(argv)
    if args.days < 1 or args.rounds < 1:
        parser.error(f"--days and --rounds must be >= 1, got {args.days} and {args.rounds}")
    if not args.verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    out = Path(args.out).resolve()
    started = time.perf_counter()
    # The promote step downloads the gated model: a default deployment refuses that (the channel's
    # model_export_enabled is off), so the demo's node turns model export on, as a deployment that
    # promotes models must. Builds, login throttling and the rest keep a default deployment's settings.
    node_options = {"model_export": True}
    with (
        tempfile.TemporaryDirectory(prefix="substra-flows-demo-") as tmp,
        LocalNode(organizations=2, **node_options) as node,
    ):
        step("model export is on for this demo (model_export_enabled: the promote step downloads the model)")
        workdir = Path(tmp)
        os.environ.setdefault("SUBSTRA_FLOWS_LEDGER_DIR", str(workdir / "ledgers"))
        names = ", ".join(f"{o.name} ({o.organization_id})" for o in node.organizations)
        step(f"local Substra node on {node.url}: {names}")
        rows = run_demo(
            node,
            days=list(range(1, args.days + 1)),
            rounds=args.rounds,
            out=out,
            workdir=workdir,
            orchestrators=[o.strip() for o in args.orchestrators.split(",") if o.strip()],
            rerun=not args.no_rerun,
        )
        if args.summary:
            Path(args.summary).write_text(json.dumps([r.to_dict() for r in rows], indent=2))
    step(f"finished in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
