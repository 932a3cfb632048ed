"""Unit tests: pure code and the client against an in-process fake (no network)."""
