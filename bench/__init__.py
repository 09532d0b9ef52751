"""GPU benchmarks; results are recorded in docs/PERFORMANCE.md."""
