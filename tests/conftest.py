"""Shared by every test file: the test models are tiny, so they run on one thread."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    # tiny tensors gain nothing from a second thread and lose a lot when the cores are busy
    # (on a shared 2-core machine one overfit test ran 20x slower with two)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
