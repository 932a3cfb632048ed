"""Operators of the Substra provider."""
