"""Benchmarks, run by hand (`python -m bench`), never in CI: each figure of the performance issue
measured against its floor or peer on the same machine, written to bench/RESULTS.md."""
