"""Runnable examples of substra-flows (the demo) and the assets that tests and benchmarks share."""
