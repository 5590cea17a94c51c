import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The models in these tests are tiny: one thread is fastest (see benchmarks/); restore afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
