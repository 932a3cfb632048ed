"""Triggers of the Substra provider."""
