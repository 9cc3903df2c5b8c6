"""Developer scripts that run as Python modules (``python -m scripts.bench_impl``)."""
