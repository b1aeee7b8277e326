"""The project's benchmarks (not part of the importable packages): ``python -m benchmarks.bench``
(:mod:`benchmarks.bench`), ``benchmarks/peer/run_peer.py``, ``benchmarks/iimt_grad_norm.py``; results in README.md."""
