"""Fault campaign: the whole nightly pipeline under injected faults, one kind at a time, then mixed.

    .venv/bin/python -m benchmarks.fault_campaign [--rate 0.3] [--seeds 1 2 3] [--kinds 429 502 ... mixed]

For every fault kind of the local node (429, 502, 503, 504, reset_before, reset_after, slow_before,
slow_after, expire_token, malformed_json, login_throttle, replication_lag) and for all kinds mixed,
the pipeline steps run through ``SubstraClient`` (username/password, so an expired token is
survivable) against a 2-organization local node injecting that fault into ``--rate`` of the
requests (``replication_lag`` is not drawn: the node lags between organizations for the whole
attempt, and each answer it made stale counts as a fault):

    register_dataset (x2 organizations, samples in several batches) -> register_function (x4)
    -> submit_compute_plan (several bulk_create batches, organization 1)
    -> wait_compute_plan -> fetch_performances (organization 2, the partner)

The wait and the performances are read on the partner organization, as a partner's nightly checks
the plan it takes part in: that is the read of a key the pipeline just created elsewhere, which a
real deployment answers 404 and then stale for a while (each organization serves its own
database, fed by orchestrator events).

A step may fail: the error must name its cause (the status, "connection", "timeout", "expired",
"JSON"...). The same step sequence is then rerun, as a nightly scheduler would, with the faults still
on (``--reruns`` times) and, if it still fails, once more with the faults off. The assets of the run
are then counted on the node: they must equal those of a fault-free run EXACTLY (no duplicate, nothing
missing). Prints one row per (kind, seed) and exits 1 on any violation.

The test ``tests/faults/test_campaign.py`` runs the same code with one seed and a 20 % rate.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from examples import assets
from substra_flows import SubstraClient, steps
from substra_flows.local_node import FAULT_KINDS, FaultConfig, LocalNode

CAMPAIGN_NAMESPACE = uuid.UUID("6c1f3b0e-2d8a-4e51-9b7c-3a9d5e2f4c10")
FUNCTIONS = ("train", "aggregate", "predict", "score")
MIXED = "mixed"
#: the campaign node's settings: a default deployment's (model export off, login throttle, a 1 s build
#: phase), except builds that never reach a package index (the example functions' ``RUN pip install
#: substratools==1.0.0`` is met by the node's own packages)
CAMPAIGN_NODE_OPTIONS: dict[str, Any] = {"build_env": {"PIP_NO_INDEX": "1"}}

#: what an error caused by each fault kind must say (case-insensitive)
CAUSES: dict[str, str] = {
    "429": r"\b429\b|throttl",
    "502": r"\b502\b",
    "503": r"\b503\b",
    "504": r"\b504\b",
    "reset_before": r"connection",
    "reset_after": r"connection",
    "slow_before": r"read timeout|timed out",
    "slow_after": r"read timeout|timed out",
    "expire_token": r"\b401\b|expired",
    "malformed_json": r"json",
    "login_throttle": r"\b429\b|throttl|\b401\b|expired",  # it expires a token to force the throttled login
    "replication_lag": r"\b404\b|not found|replicat",
}


@dataclass(frozen=True)
class CampaignSettings:
    """Knobs of a campaign (small timeouts and backoffs keep a run within seconds)."""

    rate: float = 0.2
    slow_seconds: float = 1.5
    read_timeout: float = 1.0
    connect_timeout: float = 2.0
    backoff: float = 0.05
    backoff_max: float = 0.3
    max_attempts: int = 6
    retry_timeout: float = 30.0
    reruns: int = 3  # reruns with the faults still on, before one last rerun with the faults off
    samples_per_split: int = 2  # train and test samples per organization
    sample_batch_size: int = 2
    task_batch_size: int = 2
    polling_period: float = 0.3
    wait_timeout: float = 240.0

    def client_settings(self) -> dict[str, float]:
        """The client's timeouts and retry policy for a campaign (SubstraClient keyword arguments,
        Airflow connection extras and Prefect block fields alike)."""
        return {
            "read_timeout": self.read_timeout,
            "connect_timeout": self.connect_timeout,
            "backoff": self.backoff,
            "backoff_max": self.backoff_max,
            "max_attempts": self.max_attempts,
            "retry_timeout": self.retry_timeout,
        }


@dataclass
class Attempt:
    """One run of the step sequence."""

    faults_on: bool
    error: str | None = None  # "<ExceptionType>: <message>" when a step raised
    names_cause: bool = True
    seconds: float = 0.0


@dataclass
class KindResult:
    """Everything measured for one fault kind (or MIXED) and one seed."""

    kind: str
    seed: int
    expected: dict[str, int]
    face: str = "client"  # what ran the steps: the client, the Airflow DAG or the Prefect flow
    attempts: list[Attempt] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    injected: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    relogins: int = 0
    in_doubt: int = 0
    seconds: float = 0.0

    @property
    def faults(self) -> int:
        """Faults injected over all attempts with faults on."""
        return sum(self.injected.values())

    @property
    def completed(self) -> bool:
        """The last attempt went through every step."""
        return bool(self.attempts) and self.attempts[-1].error is None

    @property
    def exact(self) -> bool:
        """Asset counts equal those of the fault-free run."""
        return self.counts == self.expected

    @property
    def ok(self) -> bool:
        """The guarantee: completed, exact counts, and every error named its cause."""
        return self.completed and self.exact and all(a.names_cause for a in self.attempts)

    @property
    def outcome(self) -> str:
        """Short description for the table."""
        failed = [a for a in self.attempts if a.error]
        if not self.completed:
            text = "NOT COMPLETED"
        elif not failed:
            text = "completed"
        elif self.attempts[-1].faults_on:
            text = f"completed after {len(failed)} rerun(s)"
        else:
            text = f"completed after {len(failed)} rerun(s), last without faults"
        if self.completed and not self.exact:
            text += f"; COUNTS DIFFER {self.counts} != {self.expected}"
        if not all(a.names_cause for a in self.attempts):
            text += "; AN ERROR DID NOT NAME ITS CAUSE"
        return text

    def survived(self) -> int:
        """Faults absorbed without failing a step: injected minus the attempts they broke (one fault
        breaks an attempt, the later ones of that attempt are not counted as survived either way)."""
        return max(0, self.faults - sum(1 for a in self.attempts if a.error and a.faults_on))


class LogTally(logging.Handler):
    """Counts the client's retry, re-login and in-doubt warnings (what the faults cost)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "; retrying in " in message:
            self.counts["retries"] += 1
        elif "logging in again once" in message:
            self.counts["relogins"] += 1
        elif "in doubt" in message:
            self.counts["in_doubt"] += 1


@contextmanager
def tally_logs() -> Iterator[LogTally]:
    """Attach a :class:`LogTally` to the ``substra_flows`` logger for the duration of the block."""
    handler = LogTally()
    target = logging.getLogger("substra_flows")
    previous = target.level
    target.addHandler(handler)
    if target.getEffectiveLevel() > logging.WARNING:
        target.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        target.removeHandler(handler)
        target.setLevel(previous)


# -- the pipeline -------------------------------------------------------------------------------------


def plan_key(run_id: str) -> str:
    """The run's plan key: derived from the run id, so every rerun submits the same plan."""
    return str(uuid.uuid5(CAMPAIGN_NAMESPACE, f"plan/{run_id}"))


def pipeline(node: LocalNode, run_id: str, workdir: Path, settings: CampaignSettings) -> list[dict[str, Any]]:
    """The nightly step sequence for ``run_id``; returns the performance rows. Rerunnable as is."""
    org_ids = [o.organization_id for o in node.organizations]
    shared = {"public": False, "authorized_ids": org_ids}
    clients = [
        SubstraClient(url=o.url, username=o.username, password=o.password, **settings.client_settings())
        for o in node.organizations[:2]
    ]
    try:
        orgs = []
        for index, (client, org_id) in enumerate(zip(clients, org_ids, strict=False), start=1):
            data_dir = workdir / "data" / f"org{index}"
            train = assets.generate_samples(index, data_dir, split="train", n_samples=settings.samples_per_split)
            test = assets.generate_samples(index, data_dir, split="test", n_samples=settings.samples_per_split)
            registered = steps.register_dataset(
                client,
                name=f"campaign {run_id} org{index}",
                opener=assets.opener_path(),
                description=assets.write_description(workdir / "dataset.md", "campaign dataset"),
                sample_paths=[*train, *test],
                permissions=shared,
                logs_permission=shared,
                batch_size=settings.sample_batch_size,
                ledger_dir=workdir / "ledger",
            )
            keys = registered.sample_keys
            orgs.append(
                {
                    "organization_id": org_id,
                    "dataset_key": registered.dataset_key,
                    "train_sample_keys": keys[: len(train)],
                    "test_sample_keys": keys[len(train) :],
                }
            )
        function_keys = {}
        for name in FUNCTIONS:
            function_keys[name] = steps.register_function(
                clients[0],
                name=f"campaign {run_id} {name}",
                archive=assets.build_function_archive(name, workdir / "functions"),
                inputs=assets.function_inputs(name),
                outputs=assets.function_outputs(name),
                description=assets.write_description(workdir / "functions" / f"{name}.md", name),
                permissions={"public": True, "authorized_ids": []},
            ).function_key
        spec = assets.build_federated_plan(
            compute_plan_key=plan_key(run_id),
            name=f"campaign {run_id}",
            function_keys=function_keys,
            orgs=orgs,
            rounds=1,
        )
        submitted = steps.submit_compute_plan(clients[0], spec, batch_size=settings.task_batch_size)
        partner = clients[1]  # reads what organization 1 just wrote: 404, then stale, under replication lag
        steps.wait_compute_plan(
            partner,
            submitted.compute_plan_key,
            timeout=settings.wait_timeout,
            polling_period=settings.polling_period,
        )
        return steps.fetch_performances(partner, submitted.compute_plan_key)
    finally:
        for client in clients:
            client.close()


def expected_task_batches(settings: CampaignSettings, n_orgs: int = 2) -> int:
    """How many bulk_create batches the campaign plan needs (the campaign wants at least 3)."""
    n_tasks = n_orgs + 1 + 2 * n_orgs  # train per org, one aggregate, predict + score per org
    return -(-n_tasks // settings.task_batch_size)


def count_assets(node: LocalNode, run_id: str) -> dict[str, int]:
    """What the node holds for ``run_id``, read from its store (faults do not touch this)."""
    prefix = f"campaign {run_id} "
    store = node.store
    with store.lock:
        datasets = {k for k, d in store.datasets.items() if d["name"].startswith(prefix)}
        plans = {k for k, p in store.plans.items() if p["name"] == f"campaign {run_id}"}
        tasks = {k for k, t in store.tasks.items() if t["compute_plan_key"] in plans}
        return {
            "datasets": len(datasets),
            "samples": sum(1 for s in store.samples.values() if set(s["data_manager_keys"]) & datasets),
            "functions": sum(1 for f in store.functions.values() if f["name"].startswith(prefix)),
            "plans": len(plans),
            "tasks": len(tasks),
            "tasks done": sum(1 for k in tasks if store.tasks[k]["status"] == "STATUS_DONE"),
            "performances": sum(len(store.performances.get(k, [])) for k in tasks),
        }


def text_names_cause(kind: str, text: str) -> bool:
    """Whether an error text names what happened, for the kind injected (any kind for MIXED)."""
    patterns = list(CAUSES.values()) if kind == MIXED else [CAUSES[kind]]
    return any(re.search(p, text, re.IGNORECASE) for p in patterns)


def names_cause(kind: str, error: BaseException) -> bool:
    """Whether the error (type and message) names what happened."""
    return text_names_cause(kind, f"{type(error).__name__}: {error}")


def count_all(node: LocalNode, run_id: str = "") -> dict[str, int]:
    """Everything the node holds (for a node that served one run only), keyed as :func:`count_assets`."""
    store = node.store
    with store.lock:
        return {
            "datasets": len(store.datasets),
            "samples": len(store.samples),
            "functions": len(store.functions),
            "plans": len(store.plans),
            "tasks": len(store.tasks),
            "tasks done": sum(1 for t in store.tasks.values() if t["status"] == "STATUS_DONE"),
            "performances": sum(len(v) for v in store.performances.values()),
        }


def fault_config(kind: str, seed: int, settings: CampaignSettings) -> FaultConfig:
    """Faults of one kind (all kinds for MIXED) at the campaign's rate."""
    kinds = FAULT_KINDS if kind == MIXED else (kind,)
    return FaultConfig(rate=settings.rate, kinds=tuple(kinds), slow_seconds=settings.slow_seconds, seed=seed)


#: runs the step sequence of ``run_id`` once and returns its performance rows (raising on failure);
#: running it again for the same ``run_id`` must be safe
Pipeline = Callable[[LocalNode, str, Path, CampaignSettings], list[dict[str, Any]]]
#: the assets of ``run_id`` on the node
AssetCount = Callable[[LocalNode, str], dict[str, int]]


def run_kind(
    node: LocalNode,
    kind: str,
    seed: int,
    settings: CampaignSettings,
    workdir: Path,
    expected: dict[str, int],
    *,
    run: Pipeline = pipeline,
    count: AssetCount = count_assets,
    face: str = "client",
) -> KindResult:
    """Run the pipeline under ``kind`` faults, rerunning after failures; count the assets at the end.

    ``run`` and ``count`` default to the client's step sequence; the orchestrator faces pass their own
    (benchmarks/fault_campaign_faces.py)."""
    run_id = f"{kind}-s{seed}-{uuid.uuid4().hex[:6]}"
    result = KindResult(kind=kind, seed=seed, expected=expected, face=face)
    started = time.monotonic()
    requests = 0
    injected: Counter[str] = Counter()
    with tally_logs() as tally:
        for number in range(settings.reruns + 2):
            faults_on = number <= settings.reruns
            # one RNG stream per (kind, seed, attempt): kinds do not all hit the same request numbers
            stream = zlib.crc32(f"{kind}/{seed}/{number}".encode())
            node.set_faults(fault_config(kind, stream, settings) if faults_on else None)
            attempt = Attempt(faults_on=faults_on)
            attempt_started = time.monotonic()
            try:
                run(node, run_id, workdir / run_id, settings)
            except Exception as error:  # every failure is recorded and judged
                attempt.error = f"{type(error).__name__}: {error}"
                attempt.names_cause = faults_on and names_cause(kind, error)
            finally:
                attempt.seconds = time.monotonic() - attempt_started
                if faults_on:
                    stats = node.fault_stats()
                    requests += stats["requests"]
                    injected.update(stats["injected"])
                node.set_faults(None)
            result.attempts.append(attempt)
            if attempt.error is None:
                break
        result.retries = tally.counts["retries"]
        result.relogins = tally.counts["relogins"]
        result.in_doubt = tally.counts["in_doubt"]
    node.wait_idle(timeout=settings.wait_timeout)
    result.counts = count(node, run_id)
    result.requests = requests
    result.injected = dict(injected)
    result.seconds = time.monotonic() - started
    return result


def baseline(
    node: LocalNode,
    settings: CampaignSettings,
    workdir: Path,
    *,
    run: Pipeline = pipeline,
    count: AssetCount = count_assets,
) -> dict[str, int]:
    """Counts of a fault-free run: what every faulty run must end with."""
    node.set_faults(None)
    run_id = f"baseline-{uuid.uuid4().hex[:6]}"
    rows = run(node, run_id, workdir / run_id, settings)
    node.wait_idle(timeout=settings.wait_timeout)
    counts = count(node, run_id)
    if counts["performances"] != len(rows) or counts["tasks done"] != counts["tasks"]:
        raise RuntimeError(f"the fault-free run is inconsistent: {counts}, {len(rows)} performance rows")
    return counts


# -- report ---------------------------------------------------------------------------------------------

COLUMNS = (
    ("kind", 15),
    ("seed", 4),
    ("requests", 8),
    ("faults", 6),
    ("retries", 7),
    ("re-logins", 9),
    ("in doubt", 8),
    ("survived", 8),
    ("attempts", 8),
    ("seconds", 7),
    ("assets", 6),
    ("outcome", 0),
)


def format_table(results: Sequence[KindResult], settings: CampaignSettings) -> str:
    """A Markdown table of the campaign, one row per (kind, seed), plus the errors met."""
    lines = [
        f"Fault campaign: rate {settings.rate:.0%} per request, read timeout {settings.read_timeout:g} s, "
        f"slow answers {settings.slow_seconds:g} s, reruns with faults on: {settings.reruns}",
    ]
    if results:
        lines.append("expected assets per run: " + ", ".join(f"{k} {v}" for k, v in results[0].expected.items()))
    lines.append("| " + " | ".join(f"{name:>{width}}" for name, width in COLUMNS) + " |")
    lines.append("|" + "|".join("-" * (max(width, len(name)) + 2) for name, width in COLUMNS) + "|")
    for r in results:
        cells = (
            r.kind if r.face == "client" else f"{r.face}:{r.kind}",
            r.seed,
            r.requests,
            r.faults,
            r.retries,
            r.relogins,
            r.in_doubt,
            r.survived(),
            len(r.attempts),
            f"{r.seconds:.1f}",
            "exact" if r.exact else "WRONG",
            r.outcome,
        )
        lines.append("| " + " | ".join(f"{c!s:>{w}}" for c, (_, w) in zip(cells, COLUMNS, strict=True)) + " |")
    errors = [(r, a) for r in results for a in r.attempts if a.error]
    if errors:
        lines.append("errors that stopped an attempt (then rerun):")
        for r, a in errors:
            text = a.error if len(a.error or "") <= 220 else (a.error or "")[:217] + "..."
            lines.append(f"  [{r.face}:{r.kind} s{r.seed}] {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the campaign on a fresh node and print the table; exit 1 on any broken guarantee."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=0.3, help="share of requests hit by a fault (default 0.3)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="fault seeds (default 1 2 3)")
    parser.add_argument(
        "--kinds", nargs="+", default=[*FAULT_KINDS, MIXED], help=f"kinds to run (default: all and {MIXED})"
    )
    parser.add_argument("--reruns", type=int, default=3, help="reruns with faults on before a fault-free one")
    args = parser.parse_args(argv)
    unknown = set(args.kinds) - {*FAULT_KINDS, MIXED}
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}")
    settings = dataclasses.replace(CampaignSettings(), rate=args.rate, reruns=args.reruns)
    quiet = logging.StreamHandler()
    quiet.setLevel(logging.ERROR)  # the tally counts the client's warnings; only errors are printed
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s", handlers=[quiet])
    results: list[KindResult] = []
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="fault-campaign-") as tmp,
        LocalNode(organizations=2, **CAMPAIGN_NODE_OPTIONS) as node,
    ):
        expected = baseline(node, settings, Path(tmp))
        print(f"fault-free run: {expected}", flush=True)
        for seed in args.seeds:
            for kind in args.kinds:
                result = run_kind(node, kind, seed, settings, Path(tmp), expected)
                print(f"{kind:>14} seed {seed}: {result.outcome} ({result.seconds:.1f} s)", flush=True)
                results.append(result)
    print()
    print(format_table(results, settings))
    print(f"campaign finished in {time.monotonic() - started:.0f} s")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
