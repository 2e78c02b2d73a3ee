"""Benchmarks and load harnesses. It may import every package; no product package imports it
(the CLI root mounts its commands through a lazy, guarded import)."""
