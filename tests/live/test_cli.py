"""``substra-flows local-node``: prints each organization's URL, id, username, password and a ready
token, serves until Ctrl-C, then removes everything it stored."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.live

ORG_LINE = re.compile(
    r"^\s+(?P<name>org-\d): url=(?P<url>\S+) organization_id=(?P<id>\S+) "
    r"username=(?P<username>\S+) password=(?P<password>\S+) token=(?P<token>\S+)$"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_cli_serves_two_organizations_until_ctrl_c() -> None:
    port = free_port()
    command = [sys.executable, "-m", "substra_flows.cli", "local-node", "--organizations", "2", "--port", str(port)]
    node = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None
        lines = [node.stdout.readline() for _ in range(4)]
        assert lines[0].startswith(f"Local Substra node on http://127.0.0.1:{port}"), lines
        media_root = Path(lines[1].strip().rsplit(" ", 1)[-1])
        orgs = [ORG_LINE.match(line.rstrip("\n")) for line in lines[2:]]
        assert all(orgs), lines
        for i, org in enumerate(orgs, start=1):
            assert org["url"] == f"http://127.0.0.1:{port}/org-{i}" and org["id"] == f"MyOrg{i}MSP"
            info = requests.get(
                f"{org['url']}/info/",
                headers={"Authorization": f"Token {org['token']}", "Accept": "application/json;version=0.0"},
                timeout=10,
            ).json()
            assert info["organization_id"] == org["id"] and info["user"] == org["username"]  # the token is ready
            login = requests.post(
                f"{org['url']}/api-token-auth/",
                data={"username": org["username"], "password": org["password"]},
                headers={"Accept": "application/json;version=0.0"},
                timeout=10,
            )
            assert login.status_code == 200 and login.json()["token"]  # and so are the printed credentials
        assert media_root.is_dir()
        node.send_signal(signal.SIGINT)
        assert node.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while media_root.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not media_root.exists()  # ephemeral: everything it stored is gone
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(timeout=10)


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_the_cli_warns_when_it_binds_beyond_loopback(host: str, warned: bool) -> None:
    command = [sys.executable, "-m", "substra_flows.cli", "local-node", "--organizations", "1", "--port", "0"]
    node = subprocess.Popen([*command, "--host", host], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None and node.stdout.readline().startswith("Local Substra node on")
        node.send_signal(signal.SIGINT)
        _, errors = node.communicate(timeout=30)
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(timeout=10)
    assert ("WARNING: --host 0.0.0.0 binds beyond loopback" in errors) is warned, errors
    if warned:
        assert "passwords and tokens" in errors
