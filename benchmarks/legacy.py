"""What the 0.x surface costs: the 0.x example script against the same plan in 1.0 specs.

    .venv/bin/python -m benchmarks.legacy [--repeat 3]

On a fresh local node (2 organizations), per repeat: the 0.x script (examples/legacy/federated_0x.py:
profiles and logins, datasets and samples, objective, three algos, the plan, waiting, scores,
leaderboard), its rerun with ``exist_ok=True`` (finds everything, creates nothing), a few 0.x
reads (get_compute_plan, list_composite_traintuple, list_testtuple, leaderboard), and the same plan
written directly with 1.0 specs (examples/legacy/federated_1_0.py). Prints the HTTP requests each
sends and its seconds (medians of the repeats), and the 0.x / 1.0 ratios. Both wait for the plan
by polling every 0.2 s: the seconds are mostly task execution, and the request counts of the first
run and of the 1.0 plan include a few status polls (they vary by one or two between runs).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from examples.legacy import federated_0x, federated_1_0
from substra_flows import SubstraClient
from substra_flows.legacy import Client
from substra_flows.local_node import LocalNode

POLL = 0.2
#: no minimum build time and builds that never reach a package index: the figures measure the
#: translation, not the node's simulated image builds (a 0.x algo is two functions, so two builds)
NODE_OPTIONS: dict[str, Any] = {"build_seconds": 0.0, "build_env": {"PIP_NO_INDEX": "1"}}


@contextmanager
def counted() -> Iterator[dict[str, int]]:
    """Count the HTTP requests sent in the block (by every client of the process)."""
    counts = {"requests": 0}
    original = requests.Session.send

    def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        counts["requests"] += 1
        return original(self, request, **kwargs)

    requests.Session.send = send  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        requests.Session.send = original  # type: ignore[method-assign]


def timed(step: Callable[[], Any]) -> tuple[Any, float, int]:
    with counted() as counts:
        start = time.perf_counter()
        result = step()
        seconds = time.perf_counter() - start
    return result, seconds, counts["requests"]


def one_repeat(folder: Path) -> dict[str, tuple[float, int]]:
    figures: dict[str, tuple[float, int]] = {}
    with LocalNode(organizations=2, **NODE_OPTIONS) as node:
        creds = [federated_0x.Credentials(o.url, o.username, o.password) for o in node.organizations]
        files = {"config_path": folder / "substra.json", "user_path": folder / "user.json", "workdir": folder / "0x"}
        first, seconds, sent = timed(lambda: federated_0x.run(**files, credentials=creds, polling_period=POLL))
        figures["0.x script, first run"] = (seconds, sent)
        second, seconds, sent = timed(lambda: federated_0x.run(**files, exist_ok=True, polling_period=POLL))
        assert second["keys"] == first["keys"], "the rerun must find what the first run created"
        figures["0.x script, rerun with exist_ok=True"] = (seconds, sent)
        client = Client(url=node.organizations[0].url, token=node.organizations[0].token)

        def reads() -> None:
            client.get_compute_plan(first["compute_plan_id"])
            client.list_composite_traintuple()
            client.list_testtuple()
            client.leaderboard(first["keys"]["objective"])

        _, seconds, sent = timed(reads)
        figures["0.x reads (plan, composites, testtuples, leaderboard)"] = (seconds, sent)
        client.close()
        clients = [SubstraClient(url=o.url, token=o.token) for o in node.organizations]
        scores, seconds, sent = timed(lambda: federated_1_0.run(clients, folder / "1.0", polling_period=POLL))
        assert scores == first["scores"], f"scores differ: {scores} vs {first['scores']}"
        figures["the same plan in 1.0 specs"] = (seconds, sent)
        for c in clients:
            c.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_repeat(Path(tmp)))
    print(f"{'step':58} {'requests':>9} {'seconds':>8}")
    medians = {}
    for step in runs[0]:
        seconds = statistics.median(r[step][0] for r in runs)
        sent = int(statistics.median(r[step][1] for r in runs))
        medians[step] = (seconds, sent)
        print(f"{step:58} {sent:9d} {seconds:8.2f}")
    legacy, native = medians["0.x script, first run"], medians["the same plan in 1.0 specs"]
    print(f"ratio 0.x first run / 1.0 specs: requests {legacy[1] / native[1]:.2f}, seconds {legacy[0] / native[0]:.2f}")


if __name__ == "__main__":
    main()
