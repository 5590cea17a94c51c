import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """These tiny models run fastest on one thread (benchmarks/training_loop.py); restore afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
