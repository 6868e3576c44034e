"""One torch thread for the model tests: tiny graphs gain nothing from more, and shared cores make them crawl."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Run each model test on one intra-op thread, restoring the previous setting after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
