"""Benchmarks of what patchray exists for: patches to accelerators, fast and in bounded memory."""
