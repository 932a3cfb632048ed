"""Fixtures of the unit tests (the fake server lives in _fakes.py)."""

from ._fakes import adapter, client, make_client, server, sleeps

__all__ = ["adapter", "client", "make_client", "server", "sleeps"]
