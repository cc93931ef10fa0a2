import pytest
import torch
from helpers import TINY


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_config():
    from hf_vit import HfViTConfig

    def make(**overrides):
        return HfViTConfig(**{**TINY, **overrides})

    return make
