"""A local Substra node: substra-backend 1.0's REST API on 127.0.0.1, with real task execution.

One HTTP server serves N organizations under ``/org-1/``, ``/org-2/``... sharing one asset store
(as a channel shares the orchestrator's ledger). Tasks run in the background through the
official ``substra`` SDK's subprocess backend, hosted in a child process.

    from substra_flows.local_node import LocalNode
    with LocalNode(organizations=2) as node:
        org = node.organizations[0]   # .url .organization_id .username .password .token

Deliberate differences from a real substra-backend 1.0 deployment (substra-rest-api.md):
- Ephemeral: memory plus a temp dir, deleted on exit. One user per organization
  (username ``org-N``, random password) and one ready token per organization.
- Functions are READY as soon as they are registered (no image build), so tasks never show
  ``STATUS_WAITING_FOR_BUILDER_SLOT`` / ``STATUS_BUILDING`` and BUILD_ERROR never occurs; a broken
  archive surfaces as an EXECUTION_ERROR of the first task that uses it.
- Tasks run one at a time across all organizations, oldest ready task first.
- PUT (rename) and cancel apply immediately; the real server applies them when the
  orchestrator's event arrives.
- Cancel marks every not-started task CANCELED; a task already executing runs to its end.
  Cancelling a plan in a final state (DONE, FAILED or CANCELED) gives 500, as the real server
  does for FAILED and CANCELED.
- After a task fails, its plan is FAILED and the plan's other waiting tasks are not started
  (they keep their waiting status).
- Logs are served for failed tasks only (410 otherwise), as the real server; they hold the
  task's stdout and stderr and the executor's traceback.
- Login is not throttled, implicit login cannot be disabled, OIDC and JWT are not offered.
- No organization-to-organization proxying: every organization reads files from the shared store,
  after the same permission checks.
- Server-path data samples: organization ``org-N`` registers folders under its own
  ``<servermedias root>/org-N/`` only (``node.organizations[i].servermedias_root``); a folder holding
  a symbolic link or a special file is refused (400). A real deployment mounts one servermedias
  volume per organization.
- The HTTP edge has limits (``NodeLimits``: body sizes, JSON depth, sample archive size and file
  count, request-head and body deadlines, a connection cap; see ``limits.py``), answered 413 / 408 /
  400 with a JSON body. Malformed input (NUL bytes, lone surrogates, wrong types where keys are
  expected, device files in archives...) gets a 400 JSON where the real server may answer 500.
- Orchestrator error texts (``OE0003`` ...) are modelled on the one documented format
  (``OE0006: ... already exists``); their exact wording is not known.
- A task without a dataset gets ``logs_permission`` = its worker and the plan owner.

Copied surprises (because clients must cope with them): no trailing slash on a POST gives 500;
a non-UUID plan key, a function spec without inputs/outputs and a task input without
``asset_key`` give 500 with a non-JSON body; 409 bodies carry no ``key``; create responses of
datasets and functions have a string ``description``; ``/perf/`` and ``/organization/`` are not
paginated; unknown filters are ignored; plan lists default to 10 items a page.
"""

from .faults import FAULT_KINDS, FaultConfig
from .limits import NodeLimits
from .node import LocalNode, NodeOrganization

__all__ = ["FAULT_KINDS", "FaultConfig", "LocalNode", "NodeLimits", "NodeOrganization"]
