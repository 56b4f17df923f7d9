def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device (run by bench/gpu.py with `pytest -m cuda`)")
