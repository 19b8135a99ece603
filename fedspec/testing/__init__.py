"""Harness pieces for fedspec's own tests and benchmarks (Optuna keeps ``optuna.testing`` the same way)."""
