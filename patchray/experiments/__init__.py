"""Experiments built from the jobs: the init comparison of the paper."""
