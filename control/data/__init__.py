"""Data shipped with the scheduler: the H200 profiles the benchmark plans on."""
