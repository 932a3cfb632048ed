"""Credentials in a URL are refused before anything is sent; downloads are bounded in size.

Every answer comes from the in-process fake (tests/unit/_fakes.py). The slow-server side of the
client's deadlines lives in tests/faults/test_slow_server.py (it needs real sockets).
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from substra_flows import SubstraClient
from substra_flows import exceptions as exc
from substra_flows.transport import Transport

from ._fakes import TOKEN

PASSWORD = "Sup3r-secret-pw"
URLS_WITH_USERINFO = [
    f"https://bob:{PASSWORD}@substra.example/org-1",
    f"http://bob:{PASSWORD}@127.0.0.1:8000",
    f"https://{PASSWORD}@substra.example",  # a token pasted as the user name
]


@pytest.mark.parametrize("url", URLS_WITH_USERINFO)
def test_a_url_with_userinfo_is_refused_before_any_request(make_client, adapter, caplog, url):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(exc.ConfigurationError) as raised:
        make_client(url=url)
    text = str(raised.value)
    assert "url=" in text and "user:pass@host" in text and "***@" in text
    assert PASSWORD not in text and PASSWORD not in repr(raised.value)
    assert PASSWORD not in caplog.text
    assert adapter.calls == []


def test_a_url_with_userinfo_from_the_environment_is_refused(make_client, adapter, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SUBSTRA_PIPE_URL", URLS_WITH_USERINFO[0])
    with pytest.raises(exc.ConfigurationError, match="environment variable SUBSTRA_PIPE_URL") as raised:
        SubstraClient(client_name="pipe", token=TOKEN)
    assert PASSWORD not in str(raised.value) and PASSWORD not in caplog.text
    assert adapter.calls == []


def test_a_transport_refuses_userinfo_too():
    with pytest.raises(exc.ConfigurationError) as raised:
        Transport(URLS_WITH_USERINFO[0], token=TOKEN)
    assert PASSWORD not in str(raised.value) and "https://***@substra.example/org-1" in str(raised.value)


def test_a_server_link_with_userinfo_is_rebased_and_not_logged(client, adapter, caplog):
    caplog.set_level(logging.DEBUG)
    link = f"http://eve:{PASSWORD}@substra.test/org-1/compute_plan/?page=2"
    rebased = client.transport.rebase(link)
    assert rebased == "http://substra.test/org-1/compute_plan/?page=2"
    assert PASSWORD not in caplog.text


# -- download size ---------------------------------------------------------------------------------


def _model_route(adapter, body: bytes, headers: dict[str, str]) -> str:
    key = str(uuid.uuid4())
    adapter.route("GET", rf"/model/{key}/file/", lambda c, m: (200, body, headers))
    return key


def test_an_announced_oversized_download_is_refused_before_writing(make_client, adapter, tmp_path: Path):
    client = make_client(max_download_bytes=1024)
    key = _model_route(adapter, b"", {"Content-Length": str(10 * 1024**3), "Content-Type": "application/octet-stream"})
    with pytest.raises(exc.InvalidResponse, match=r"announces 10737418240 bytes, more than max_download_bytes=1024"):
        client.download_model(key, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_download_larger_than_announced_stops_at_the_limit(make_client, adapter, tmp_path: Path):
    client = make_client(max_download_bytes=1024)
    key = _model_route(adapter, b"x" * 5000, {"Content-Type": "application/octet-stream"})
    with pytest.raises(exc.InvalidResponse, match="the body is larger than max_download_bytes=1024; nothing was"):
        client.download_model(key, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_download_within_the_limit_is_written_whole(make_client, adapter, tmp_path: Path):
    client = make_client(max_download_bytes=5000)
    key = _model_route(adapter, b"x" * 5000, {"Content-Type": "application/octet-stream"})
    path = client.download_model(key, tmp_path)
    assert path.read_bytes() == b"x" * 5000
    assert [p.name for p in tmp_path.iterdir()] == [f"model_{key}"]


def test_download_limit_and_total_timeout_come_from_the_environment(make_client, monkeypatch):
    monkeypatch.setenv("SUBSTRA_NIGHTLY_MAX_DOWNLOAD_BYTES", "2048")
    monkeypatch.setenv("SUBSTRA_NIGHTLY_TOTAL_TIMEOUT", "45")
    client = make_client(client_name="nightly")
    assert client.transport.max_download_bytes == 2048
    assert client.transport.total_timeout == 45
    unbounded = make_client(max_download_bytes=0, total_timeout=0)
    assert unbounded.transport.max_download_bytes is None and unbounded.transport.total_timeout is None


def test_an_interrupted_download_leaves_nothing(make_client, adapter, tmp_path: Path):
    """Even an interrupt that is not an Exception (Ctrl-C) leaves no partial file."""
    client = make_client()
    key = _model_route(adapter, b"x" * 10, {"Content-Type": "application/octet-stream"})
    original_send = adapter.send

    class Interrupted:
        def stream(self, *args, **kwargs):
            yield b"partial"
            raise KeyboardInterrupt

        def close(self) -> None:
            pass

    def send(request, **kwargs):
        response = original_send(request, **kwargs)
        response.raw = Interrupted()
        return response

    adapter.send = send
    with pytest.raises(KeyboardInterrupt):
        client.download_model(key, tmp_path)
    assert list(tmp_path.iterdir()) == []
