"""The ``substra-flows`` command: ``substra-flows local-node --organizations 2 --port 8000``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def _local_node(args: argparse.Namespace) -> int:
    from substra_flows.local_node import FaultConfig, LocalNode

    faults = None
    if args.fault_rate > 0:
        kinds = tuple(k for k in args.fault_kinds.split(",") if k) if args.fault_kinds else None
        faults = FaultConfig(rate=args.fault_rate, kinds=kinds) if kinds else FaultConfig(rate=args.fault_rate)
    node = LocalNode(
        organizations=args.organizations,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        faults=faults,
        model_export=args.model_export,
        build_seconds=args.build_seconds,
        replication_lag=args.replication_lag,
        login_throttle=args.login_throttle or None,
    )
    node.start()
    print(f"Local Substra node on {node.url} (Ctrl-C to stop; everything is deleted on exit)")
    print(f"Server-path data samples must live under {node.servermedias_root}")
    for org in node.organizations:
        print(
            f"  {org.name}: url={org.url} organization_id={org.organization_id} "
            f"username={org.username} password={org.password} token={org.token}"
        )
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``substra-flows`` console script."""
    parser = argparse.ArgumentParser(prog="substra-flows")
    commands = parser.add_subparsers(dest="command", required=True)
    node = commands.add_parser("local-node", help="serve a local Substra node until Ctrl-C")
    node.add_argument("--organizations", type=int, default=2, help="number of organizations (default 2)")
    node.add_argument("--port", type=int, default=8000, help="TCP port on 127.0.0.1 (0: any free port)")
    node.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
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
    node.set_defaults(run=_local_node)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
