"""Stage 03: the end-to-end network validation suite (probes, workloads, suite, perf, results)."""
