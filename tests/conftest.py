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


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A finished `scripts/train.py` run on a subset of the digits (4 steps, checkpoints at steps 2 and 4), made once
    per test process for the tests that read a run's folder. Never change it: copy it first."""
    from test_train import train

    out = tmp_path_factory.mktemp("trained_run") / "run"
    result = train("--output_dir", out, "--max_train_steps", "4", "--checkpointing_steps", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The loopback Hub-protocol server (tests/hub_server.py), one per test module that asks for it."""
    from hub_server import HubServer

    server = HubServer(tmp_path_factory.mktemp("hub")).start()
    yield server
    server.stop()
