"""Tokens and passwords never show: not in logs, errors, reprs, results, node files or cassettes; TLS stays on.

A full pipeline runs against a local node of this module with KNOWN secrets (each organization's
ready token and password, every token the node issues during the test, a wrong password, a forged
token), with every logger at DEBUG, the process's file descriptors captured and a series of forced
errors (wrong password, forged token, expired tokens, 404, 400, a failed task, a lost creation
answer, throttling, slow answers). Everything the run leaves behind (log records with their
tracebacks, stdout/stderr, exception texts, reprs, tracebacks and pickles, client reprs, JSON and
pickled step results, the node's own files) is then searched for each secret.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import pickle
import re
import secrets
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from examples import assets
from substra_flows import SubstraClient, steps
from substra_flows import exceptions as exc
from substra_flows.local_node import FaultConfig, LocalNode
from tests.recording import TEST_NODE_OPTIONS

pytestmark = pytest.mark.live

CASSETTES = Path(__file__).resolve().parents[1] / "cassettes"


# -- capture ------------------------------------------------------------------------------------------


class Recorder(logging.Handler):
    """Keeps every record, fully formatted (message, arguments and traceback)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@dataclasses.dataclass
class Evidence:
    """Everything the run produced that a user, a log shipper or a result store could see."""

    recorder: Recorder
    pieces: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def add(self, source: str, value: Any) -> None:
        self.pieces.setdefault(source, []).append(value if isinstance(value, str) else repr(value))

    def add_error(self, name: str, error: BaseException) -> None:
        """An exception as every consumer may render it: str, repr, traceback, args, attributes, pickle."""
        self.add(f"error {name}", str(error))
        self.add(f"error {name}", repr(error))
        self.add(f"error {name}", "".join(traceback.format_exception(error)))
        self.add(f"error {name}", repr(error.args))
        self.add(f"error {name}", repr(vars(error)))
        self.add(f"error {name} (pickle)", pickle.dumps(error).decode("latin-1"))

    def find(self, secret: str) -> list[str]:
        """Sources whose text contains ``secret``."""
        sources = {"logs": self.recorder.texts, **self.pieces}
        return [name for name, texts in sources.items() if any(secret in t for t in texts)]


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    with LocalNode(organizations=2, log_level="debug", **TEST_NODE_OPTIONS) as started:
        yield started


@pytest.fixture(scope="module")
def issued(node: LocalNode) -> Iterator[list[str]]:
    """Every token value the node issues from now on (logins, re-logins)."""
    assert node.api is not None
    tokens: list[str] = []
    original = node.api.issue_token

    def recording(*args: Any, **kwargs: Any) -> Any:
        token = original(*args, **kwargs)
        tokens.append(token.token)
        return token

    node.api.issue_token = recording  # type: ignore[method-assign]
    yield tokens
    node.api.issue_token = original  # type: ignore[method-assign]


@pytest.fixture
def evidence() -> Iterator[Evidence]:
    """Every logger at DEBUG into one recorder, including loggers that do not propagate (uvicorn)."""
    recorder = Recorder()
    manager = logging.Logger.manager
    loggers = [logging.getLogger()] + [
        logging.getLogger(name) for name, obj in list(manager.loggerDict.items()) if isinstance(obj, logging.Logger)
    ]
    saved = [(lg, lg.level, lg.disabled) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.disabled = False
        if lg is logging.getLogger() or not lg.propagate:
            lg.addHandler(recorder)
    try:
        yield Evidence(recorder)
    finally:
        for lg, level, disabled in saved:
            lg.setLevel(level)
            lg.disabled = disabled
            if recorder in lg.handlers:
                lg.removeHandler(recorder)


def expect_error(evidence: Evidence, name: str, call: Callable[[], Any], kind: type[BaseException]) -> BaseException:
    """Run ``call``; it must raise ``kind``; keep every rendering of the error as evidence."""
    with pytest.raises(kind) as raised:
        call()
    evidence.add_error(name, raised.value)
    return raised.value


# -- the pipeline with forced errors --------------------------------------------------------------------


def _pipeline(node: LocalNode, token_client: SubstraClient, password_client: SubstraClient, workdir: Path) -> list[Any]:
    """Both organizations register data (one with a token, one with a password), org 1 trains and scores."""
    org_ids = [o.organization_id for o in node.organizations]
    shared = {"public": False, "authorized_ids": org_ids}
    results: list[Any] = []
    orgs = []
    for index, client in enumerate((token_client, password_client), start=1):
        train = assets.generate_samples(index, workdir / f"org{index}", split="train", n_samples=2)
        test = assets.generate_samples(index, workdir / f"org{index}", split="test", n_samples=1)
        registered = steps.register_dataset(
            client,
            name=f"secrets org{index}",
            opener=assets.opener_path(),
            sample_paths=[*train, *test],
            permissions=shared,
            logs_permission=shared,
            batch_size=2,
            ledger_dir=workdir / "ledger",
        )
        results.append(registered)
        orgs.append(
            {
                "organization_id": org_ids[index - 1],
                "dataset_key": registered.dataset_key,
                "train_sample_keys": registered.sample_keys[:2],
                "test_sample_keys": registered.sample_keys[2:],
            }
        )
    function_keys = {}
    for name in ("train", "aggregate", "predict", "score"):
        registered_fn = steps.register_function(
            token_client,
            name=f"secrets {name}",
            archive=assets.build_function_archive(name, workdir / "functions"),
            inputs=assets.function_inputs(name),
            outputs=assets.function_outputs(name),
            permissions={"public": True, "authorized_ids": []},
        )
        results.append(registered_fn)
        function_keys[name] = registered_fn.function_key
    plan_key = steps.derive_key("secrets-test", uuid.uuid4().hex)
    spec = assets.build_federated_plan(
        compute_plan_key=plan_key, name="secrets plan", function_keys=function_keys, orgs=orgs, rounds=1
    )
    submitted = steps.submit_compute_plan(token_client, spec, batch_size=3)
    results.append(submitted)
    results.append(steps.wait_compute_plan(token_client, plan_key, timeout=300, polling_period=0.3))
    results.append(
        asyncio.run(steps.async_wait_compute_plan(password_client, plan_key, timeout=60, polling_period=0.3))
    )
    results.append(steps.fetch_performances(token_client, plan_key))
    results.append(steps.leaderboard(token_client, identifier="performance"))
    results.append(token_client.get_performances(plan_key))
    results.append(password_client.list_task({"compute_plan_key": [plan_key]}))
    results.append(token_client.organization_info())
    results.append(function_keys)
    return results


def _forced_errors(
    node: LocalNode, evidence: Evidence, token_client: SubstraClient, password_client: SubstraClient, workdir: Path
) -> dict[str, str]:
    """Make the client fail in every way a pipeline meets; return the extra secrets used."""
    org1, org2 = node.organizations
    wrong_password = "wrong-" + secrets.token_urlsafe(12)
    forged_token = secrets.token_hex(20)

    expect_error(
        evidence,
        "wrong password",
        lambda: SubstraClient(url=org2.url, username=org2.username, password=wrong_password),
        exc.BadLoginException,
    )
    expect_error(
        evidence,
        "forged token",
        lambda: SubstraClient(url=org1.url, token=forged_token).list_compute_plan(),
        exc.AuthenticationError,
    )
    expect_error(
        evidence,
        "wrong url with a password",
        lambda: SubstraClient(url=org1.url + "/nowhere", username=org1.username, password=org1.password),
        exc.SubstraError,
    )
    expect_error(evidence, "404", lambda: token_client.get_compute_plan(str(uuid.uuid4())), exc.NotFound)
    expect_error(
        evidence,
        "404",  # an unknown function is OE0002, NotFound, as orchestrator 1.0 answers
        lambda: token_client.add_compute_plan(
            {
                "name": "bad function",
                "tasks": [
                    {"task_id": str(uuid.uuid4()), "function_key": str(uuid.uuid4()), "worker": org1.organization_id}
                ],
            }
        ),
        exc.NotFound,
    )

    # a task that fails: the error carries the tail of its logs
    fail_fn = token_client.add_function(
        {
            "name": "secrets fail",
            "file": assets.build_function_archive("fail", workdir / "functions"),
            "description": assets.write_description(workdir / "fail.md", "fail"),
            "permissions": {"public": True, "authorized_ids": []},
            "inputs": [{"identifier": i, **v} for i, v in assets.function_inputs("fail").items()],
            "outputs": [{"identifier": i, **v} for i, v in assets.function_outputs("fail").items()],
        }
    )
    dataset = token_client.list_dataset({"name": "secrets org1"})[0]
    failing = token_client.add_compute_plan(
        {
            "name": "secrets failing",
            "tasks": [
                {
                    "task_id": str(uuid.uuid4()),
                    "function_key": fail_fn,
                    "worker": org1.organization_id,
                    "inputs": [{"identifier": "opener", "asset_key": dataset.key}]
                    + [{"identifier": "datasamples", "asset_key": k} for k in dataset.data_sample_keys[:1]],
                    "outputs": {"model": {"permissions": {"public": True, "authorized_ids": []}}},
                }
            ],
        }
    )
    failure = expect_error(
        evidence,
        "failed task",
        lambda: steps.wait_compute_plan(token_client, failing.key, timeout=120, polling_period=0.3),
        exc.FutureFailureError,
    )
    assert failure.logs, "the failure should carry the task's log tail"  # type: ignore[attr-defined]

    # faults: expired tokens (with and without a password to log in again), lost answers, throttling, slowness
    raw_login = requests.post(
        f"{org1.url}/api-token-auth/", data={"username": org1.username, "password": org1.password}, timeout=10
    ).json()["token"]
    login_token_client = SubstraClient(url=org1.url, token=raw_login)
    node.set_faults(FaultConfig(rate=1.0, kinds=("expire_token",), max_faults=1))
    expect_error(evidence, "expired token", login_token_client.list_compute_plan, exc.AuthenticationError)
    node.set_faults(FaultConfig(rate=1.0, kinds=("expire_token",), max_faults=1))
    evidence.add("re-login result", password_client.list_compute_plan(page_size=5))
    node.set_faults(FaultConfig(rate=1.0, kinds=("reset_after",), max_faults=1, path_contains="/data_manager/"))
    expect_error(
        evidence,
        "lost creation answer",
        lambda: password_client.add_dataset(
            {
                "name": "secrets in doubt",
                "data_opener": assets.opener_path(),
                "permissions": {"public": True, "authorized_ids": []},
                "logs_permission": {"public": True, "authorized_ids": []},
            }
        ),
        exc.AssetMaybeCreatedError,
    )
    for kind in ("429", "502", "slow_after", "malformed_json"):
        node.set_faults(FaultConfig(rate=1.0, kinds=(kind,), max_faults=1, slow_seconds=1.5))
        fast = SubstraClient(
            url=org2.url, username=org2.username, password=org2.password, read_timeout=1.0, backoff=0.05
        )
        try:
            evidence.add(f"after {kind}", fast.list_dataset(page_size=5))
        except exc.SubstraError as error:  # malformed JSON is not retried: a clear error instead
            evidence.add_error(kind, error)
        fast.close()
    node.set_faults(None)
    login_token_client.close()
    return {"wrong password": wrong_password, "forged token": forged_token, "raw login token": raw_login}


def test_no_secret_anywhere_after_a_full_pipeline_with_errors(
    node: LocalNode, issued: list[str], evidence: Evidence, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    org1, org2 = node.organizations
    token_client = SubstraClient(url=org1.url, token=org1.token)
    password_client = SubstraClient(url=org2.url, username=org2.username, password=org2.password)

    results = _pipeline(node, token_client, password_client, tmp_path)
    extra = _forced_errors(node, evidence, token_client, password_client, tmp_path)

    for client in (token_client, password_client):
        for rendering in (
            repr(client),
            str(client),
            repr(client.settings),
            str(client.settings),
            repr(client.transport),
        ):
            evidence.add("client reprs", rendering)
    for value in results:
        evidence.add("results (repr)", value)
        evidence.add("results (pickle)", pickle.dumps(value).decode("latin-1"))
        if hasattr(value, "to_dict"):
            evidence.add("results (json)", json.dumps(value.to_dict()))
        elif hasattr(value, "model_dump_json"):
            evidence.add("results (json)", value.model_dump_json())
        elif isinstance(value, (list, dict)):
            evidence.add("results (json)", json.dumps(value, default=str))
    token_client.close()
    password_client.close()
    assert node.api is not None
    for path in node.api.workdir.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            evidence.add(
                f"node file {path.relative_to(node.api.workdir).parts[0]}", path.read_bytes().decode("latin-1")
            )
    out, err = capfd.readouterr()
    evidence.add("stdout", out)
    evidence.add("stderr", err)

    known = {
        "org-1 token": org1.token,
        "org-2 token": org2.token,
        "org-1 password": org1.password,
        "org-2 password": org2.password,
        **extra,
        **{f"issued token {i}": token for i, token in enumerate(issued)},
    }
    assert len(issued) >= 5, "logins and re-logins should have issued tokens"
    assert len(evidence.recorder.texts) > 50, "the run should have logged (DEBUG) plenty"
    assert any("retrying in" in t for t in evidence.recorder.texts)
    assert any("logging in again once" in t for t in evidence.recorder.texts)
    leaks = {name: evidence.find(secret) for name, secret in known.items()}
    assert {name: where for name, where in leaks.items() if where} == {}
    # the errors still say what happened, without the secret
    assert any("Unable to log in" in t for t in evidence.pieces["error wrong password"])
    assert any("expired" in t for t in evidence.pieces["error expired token"])


def test_the_scan_would_catch_a_leak(evidence: Evidence) -> None:
    """Control: the same evidence search finds a secret that does leak (into a log and an error)."""
    secret = secrets.token_hex(20)
    logging.getLogger("uvicorn.error").debug("leaky %s", secret)
    evidence.add_error("leaky", ValueError(f"bad {secret}"))
    assert set(evidence.find(secret)) == {"logs", "error leaky", "error leaky (pickle)"}


# -- TLS ----------------------------------------------------------------------------------------------


class VerifyRecorder(requests.adapters.BaseAdapter):
    """Answers every request with 200 {} and remembers the ``verify`` each one was sent with."""

    def __init__(self) -> None:
        super().__init__()
        self.verify: list[Any] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.verify.append(kwargs.get("verify"))
        response = requests.Response()
        response.status_code = 200
        response.request = request
        response.url = request.url or ""
        response.headers["Content-Type"] = "application/json"
        response.raw = io.BytesIO(b'{"organization_id": "MyOrg1MSP", "organization_name": "org-1"}')
        return response

    def close(self) -> None:
        pass


def _https_client(adapter: VerifyRecorder, **kwargs: Any) -> SubstraClient:
    session = requests.Session()
    session.mount("https://", adapter)
    return SubstraClient(url="https://substra.example/org-1", token=secrets.token_hex(20), session=session, **kwargs)


@pytest.fixture(params=["no CA bundle variable", "REQUESTS_CA_BUNDLE set"])
def ca_environment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str | None:
    """Run TLS tests without, then with, a CA bundle in the environment (requests reads both)."""
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    if request.param == "no CA bundle variable":
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        return None
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    return str(bundle)


def test_tls_verification_is_on_by_default(evidence: Evidence, ca_environment: str | None) -> None:
    adapter = VerifyRecorder()
    client = _https_client(adapter)
    assert client.transport.session.verify is True
    client.organization_info()
    assert adapter.verify == [ca_environment or True]  # verified, against the environment's CA bundle if any
    assert not any("verification" in t for t in evidence.recorder.texts)


def test_insecure_must_be_explicit_and_is_logged(
    evidence: Evidence, monkeypatch: pytest.MonkeyPatch, ca_environment: str | None
) -> None:
    adapter = VerifyRecorder()
    client = _https_client(adapter, insecure=True)
    assert client.transport.session.verify is False
    client.organization_info()
    assert adapter.verify == [False]  # also when REQUESTS_CA_BUNDLE is set (requests would otherwise verify)
    warnings = [t for t in evidence.recorder.texts if "WARNING" in t and "verification is disabled" in t]
    assert len(warnings) == 1 and "https://substra.example/org-1" in warnings[0]

    monkeypatch.setenv("SUBSTRA_TLS_TEST_INSECURE", "true")
    from_env = SubstraClient(client_name="tls-test", url="https://substra.example/org-1", token=secrets.token_hex(20))
    assert from_env.transport.session.verify is False
    assert sum("verification is disabled" in t for t in evidence.recorder.texts) == 2

    monkeypatch.setenv("SUBSTRA_TLS_TEST_INSECURE", "false")
    strict = SubstraClient(client_name="tls-test", url="https://substra.example/org-1", token=secrets.token_hex(20))
    assert strict.transport.session.verify is True


# -- cassettes ------------------------------------------------------------------------------------------

HEX40 = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{40}(?![0-9A-Fa-f])")
CHECKSUM_CONTEXT = re.compile(r"checksum\W{0,6}$", re.IGNORECASE)
PASSWORD_VALUE = re.compile(r"""password["']?\s*[:=]\s*["']?([^"'&\s,}]*)""", re.IGNORECASE)
AUTH_HEADER = re.compile(r"\b(Token|Bearer|Basic)\s+(?!REDACTED\b)([A-Za-z0-9._~+/=\-]{8,})")


def cassette_leaks(root: Path) -> list[str]:
    """Token-like 40-hex values that are not checksums, password values and credentials in cassettes."""
    problems = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        name = path.relative_to(root)
        for match in HEX40.finditer(text):
            if not CHECKSUM_CONTEXT.search(text[max(0, match.start() - 20) : match.start()]):
                problems.append(f"{name}: 40-hex value {match.group()[:6]}... (a token?)")
        for match in PASSWORD_VALUE.finditer(text):
            if match.group(1) not in ("", "REDACTED", "***"):
                problems.append(f"{name}: password value {match.group(1)[:3]}...")
        for match in AUTH_HEADER.finditer(text):
            problems.append(f"{name}: credential after {match.group(1)!r}")
    return problems


def test_cassettes_hold_no_token_and_no_password() -> None:
    """Every cassette under tests/cassettes/ (none yet is fine: the scan then has nothing to flag)."""
    assert cassette_leaks(CASSETTES) == []
    for path in CASSETTES.rglob("*.yaml"):
        text = path.read_text(encoding="utf-8", errors="replace")
        assert text.count("password=REDACTED") >= text.count("/api-token-auth/"), f"{path}: unscrubbed login"


def test_cassette_scan_catches_leaks(tmp_path: Path) -> None:
    """Control: the scanner flags each kind of leak, and leaves checksums and scrubbed values alone."""
    token = secrets.token_hex(20)
    (tmp_path / "ok.yaml").write_text(
        "body: username=REDACTED&password=REDACTED\n"
        "headers:\n  Authorization: [Token REDACTED]\n"
        f'string: \'{{"checksum": "{secrets.token_hex(20)}", "opener": {{"checksum": "{secrets.token_hex(32)}"}}}}\'\n'
    )
    assert cassette_leaks(tmp_path) == []
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "leak.yaml").write_text(
        f'string: \'{{"token": "{token}"}}\'\n'
        "body: username=alice&password=hunter22\n"
        "headers:\n  Authorization: [Token abcdefabcdef0123]\n"
    )
    problems = cassette_leaks(tmp_path)
    assert len(problems) == 3, problems
    assert token not in "".join(problems) and "hunter22" not in "".join(problems)
