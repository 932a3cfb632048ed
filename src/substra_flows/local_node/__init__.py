"""A local Substra node: substra-backend 1.0's REST API on 127.0.0.1, with real task execution.

One HTTP server serves N organizations under ``/org-1/``, ``/org-2/``... sharing one asset store
(as a channel shares the orchestrator's ledger). Tasks run in the background through the
official ``substra`` SDK's subprocess backend, hosted in a child process.

    from substra_flows.local_node import LocalNode
    with LocalNode(organizations=2) as node:
        org = node.organizations[0]   # .url .organization_id .username .password .token

Real-deployment behaviours it copies, and how each is configured (backend-1.0-audit.md):

- Model export: ``/model/{key}/file/`` is refused (403, ``model_export_enabled is disabled``) and
  ``/info/`` reports ``model_export_enabled: false``, as the Helm chart ships; ``LocalNode(model_export=True)``
  (CLI ``--model-export``) turns it on.
- Build phase (``build.py``): a function is WAITING, BUILDING, then READY or FAILED; its tasks wait in
  ``STATUS_WAITING_FOR_BUILDER_SLOT`` / ``STATUS_BUILDING``; the Dockerfile's WORKDIR, COPY/ADD, ENV and RUN
  lines build a per-function image folder with its own venv; a failing RUN fails the function and its
  tasks (``BUILD_ERROR``, the build output as their logs). ``build_seconds`` (least time a build takes,
  1 s), ``builder_slots`` (1) and ``build_env`` (e.g. ``{"PIP_NO_INDEX": "1"}`` to build offline).
- Cancel records a date: queued tasks are aborted to CANCELED when the worker picks them up, tasks
  waiting for parents keep their status for good; a DONE plan can be cancelled (200, it reads CANCELED);
  a second cancel is a JSON 500 ``OE0109`` after ~5 s. A failure records the plan's failure date the same
  way, so a failed plan with queued tasks reads CANCELED with its ``failed_task_key`` set.
- Permissions (``permissions.py``): the task owner must be allowed to process the function and the
  dataset (403 ``OE0102``); outputs get the task owner appended, even when public; stored permissions
  always list their owner; a task without a dataset gets its owner's and parents' logs permissions.
- Transient outputs are disabled once their consumers are done (address null, file deleted, 410, new
  tasks using them 400 ``has been disabled``); model inputs by ``asset_key`` are accepted.
- Replication lag (``replication.py``): ``replication_lag=seconds`` (default 0) makes an asset created
  through one organization 404 on the others, and task and plan statuses stale there, for that long.
- Login throttling (``throttle.py``): 40 logins and anonymous calls a minute per IP and organization
  (429 with Retry-After); ``login_throttle=N`` or None.
- Request size (``sizes.py``): a ``bulk_create`` whose protobuf estimate is over 4 MiB gets 413;
  ``max_message_bytes=N`` or None.
- Smaller: a POST without a trailing slash is a 301 (production Django); an unknown URL is an HTML
  404; a plan seen from another organization has ``creator: "external"``; the plan ``creator`` filter
  takes one exact value; error codes ``OE0101`` (invalid), ``OE0102`` (permission), ``OE0002`` (unknown
  function, dataset, sample, model, parent or worker: 404); tasks may be added to a FAILED or CANCELED
  plan (a task whose parent failed starts CANCELED); the tasks of one batch share a ``creation_date``;
  a plan's ``start_date`` is its first status other than CREATED and its ``end_date`` follows the last
  ended task; ``task_profiling/`` serves each task's step durations.

Deliberate differences that remain, and why:
- Ephemeral: memory plus a temp dir, deleted on exit; one user per organization (username ``org-N``,
  random password) and one ready token each. A node is for tests and rehearsals, not for keeping data.
- No container runtime: an image is a folder and a venv on this machine. ``FROM`` is the node's own
  Python, ``USER`` and OS steps of a RUN chain (apt-get, adduser, ...) are skipped and said so in the build
  log; RUN lines run as the node's user, so register only functions you trust (as with the SDK's
  subprocess mode). Tasks run one at a time across all organizations, oldest ready task first.
- One shared store: without ``replication_lag`` every organization sees every write at once; with it,
  the lag is the same for every pair of organizations and every kind of asset. PUT (rename) applies at once.
- A task executing when its plan is cancelled runs to its end (the real server may abort it before it starts).
- No organization-to-organization proxying (M5) nor HTTP Basic auth (A7): every organization reads
  files from the shared store after the same permission checks.
- Orchestrator error texts follow the documented format (``OE0006: ... already exists``); their exact
  wording is not known, only their codes and statuses.
- Not copied, because they would only hurt a user of the node: the 500s of the real server on malformed
  filter values (L5) and on downloads of unknown keys (M3) stay 404s or empty lists, and a list of
  functions by ``compute_plan_key`` has no duplicates (L3).

Copied surprises (because clients must cope with them): a non-UUID plan key, a function spec without
inputs/outputs and a task input without ``asset_key`` give 500 with a non-JSON body; 409 bodies carry
no ``key``; create responses of datasets and functions have a string ``description``; ``/perf/`` and
``/organization/`` are not paginated; unknown filters are ignored; plan lists default to 10 items a page.
"""

from .faults import FAULT_KINDS, FaultConfig
from .node import LocalNode, NodeOrganization

__all__ = ["FAULT_KINDS", "FaultConfig", "LocalNode", "NodeOrganization"]
