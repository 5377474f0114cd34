"""Benchmarks of mmbilevel's networks against plain PyTorch and bregmanet; run ``python -m bench.run``."""
