"""Benchmarks. Run on purpose (``make bench``), never as tests; results go to docs/performance.md."""
