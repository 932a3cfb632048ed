"""Hooks of the Substra provider."""
