"""Sensors of the Substra provider."""
