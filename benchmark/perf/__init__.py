"""Speed benchmarks: ``python -m benchmark.perf <optim|data|train|all>``."""
