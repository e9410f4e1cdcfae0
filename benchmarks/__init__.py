"""CPU benchmarks of lita-serve, each printing a baseline, ours and their ratio from one run.

Run them all with ``python -m benchmarks.run_all [--short]`` (``make bench``); the CUDA benchmark
with LITA-13B dimensions is ``python -m benchmarks.gpu_13b``.
"""
