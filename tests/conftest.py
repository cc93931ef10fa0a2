import os

# One thread per test process: the suite runs with pytest-xdist, one worker per core (`-n 2`), and the tools the tests
# start in subprocesses inherit the setting. Set OMP_NUM_THREADS yourself to choose another number.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import TINY  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_config():
    from hf_vit import HfViTConfig

    def make(**overrides):
        return HfViTConfig(**{**TINY, **overrides})

    return make
