"""Benchmarks of the whole service: ``python -m bench`` (capacity and efficiency, issue 7) and
``python -m bench.latency`` (interim and final latency, issue 3). Speed is measured here, never
asserted in tests. See docs/benchmarks.md for the method and the figures."""
