"""Benchmarks, one module each, run as ``python -m posenc_exp.bench <name>``; each prints ratios measured
side by side in one run and ends with a JSON line."""
