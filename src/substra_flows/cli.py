"""The ``substra-flows`` command: ``substra-flows local-node --organizations 2 --port 8000``."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading


def _local_node(args: argparse.Namespace) -> int:
    from substra_flows.local_node import FaultConfig, LocalNode, NodeLimits
    from substra_flows.local_node.node import is_loopback

    faults = None
    if args.fault_rate > 0:
        kinds = tuple(k for k in args.fault_kinds.split(",") if k) if args.fault_kinds else None
        faults = FaultConfig(rate=args.fault_rate, kinds=kinds) if kinds else FaultConfig(rate=args.fault_rate)
    limits = NodeLimits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(NodeLimits)})
    if not is_loopback(args.host):
        print(
            f"WARNING: --host {args.host} binds beyond loopback. Anyone who can reach this address gets every "
            "organization's API, with the passwords and tokens printed below; the local node has no TLS and is "
            "meant for 127.0.0.1.",
            file=sys.stderr,
            flush=True,
        )
    node = LocalNode(
        organizations=args.organizations,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        faults=faults,
        limits=limits,
        model_export=args.model_export,
        build_seconds=args.build_seconds,
        replication_lag=args.replication_lag,
        login_throttle=args.login_throttle or None,
        task_time_limit=args.task_time_limit or None,
    )
    node.start()
    print(f"Local Substra node on {node.url} (Ctrl-C to stop; everything is deleted on exit)")
    print(f"Server-path data samples of org-N must live under its own folder org-N/ of {node.servermedias_root}")
    for org in node.organizations:
        print(
            f"  {org.name}: url={org.url} organization_id={org.organization_id} "
            f"username={org.username} password={org.password} token={org.token}"
        )
    sys.stdout.flush()
    stop = threading.Event()
    # SIGINT too: a shell starts background jobs with SIGINT ignored, and then Python never raises
    # KeyboardInterrupt (`kill -INT` would not stop a node started with `&`)
    for stopping in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stopping, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        node.stop()
    return 0


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field of NodeLimits (``--max-body-bytes``...), with its default."""
    from substra_flows.local_node.limits import NodeLimits

    group = parser.add_argument_group("limits of the node's HTTP edge (docs/reliability.md)")
    for item in dataclasses.fields(NodeLimits):
        kind = type(item.default)
        group.add_argument(
            f"--{item.name.replace('_', '-')}",
            dest=item.name,
            type=kind,
            default=item.default,
            metavar=kind.__name__.upper(),
            help=f"{item.metadata['help']} (default {item.default})",
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``substra-flows`` console script."""
    parser = argparse.ArgumentParser(prog="substra-flows")
    commands = parser.add_subparsers(dest="command", required=True)
    node = commands.add_parser("local-node", help="serve a local Substra node until Ctrl-C")
    node.add_argument("--organizations", type=int, default=2, help="number of organizations (default 2)")
    node.add_argument("--port", type=int, default=8000, help="TCP port on 127.0.0.1 (0: any free port)")
    node.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; anything else is warned about)"
    )
    node.add_argument("--log-level", default="warning", help="uvicorn log level")
    node.add_argument("--fault-rate", type=float, default=0.0, help="share of requests hit by a fault (default 0)")
    node.add_argument(
        "--fault-kinds", default="", help="comma-separated fault kinds (default: all; see local_node/faults.py)"
    )
    node.add_argument(
        "--model-export", action="store_true", help="allow model downloads (model_export_enabled; off by default)"
    )
    node.add_argument("--build-seconds", type=float, default=1.0, help="least time a function build takes (1)")
    node.add_argument(
        "--replication-lag", type=float, default=0.0, help="seconds before other organizations see a write (0)"
    )
    node.add_argument(
        "--login-throttle", type=int, default=40, help="logins and anonymous calls a minute per IP (40; 0: off)"
    )
    node.add_argument(
        "--task-time-limit",
        type=float,
        default=3600.0,
        help="seconds a task may run before it is stopped and FAILED (3600; 0: no limit)",
    )
    _add_limit_flags(node)
    node.set_defaults(run=_local_node)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
