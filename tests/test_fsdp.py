"""FSDP on CPU: two processes (gloo) train hf_vit sharded with torch's FSDP2 and end with the weights that one
unsharded process gets on the whole batch.

accelerate (1.15 here) does not run FSDP on CPU: with scripts/accelerate_configs/fsdp.yaml and no GPU it falls back
to DDP (`Accelerator(cpu=True)`) or to a single process, so this test calls `fully_shard` itself, with the sharding
that config describes (each HfViTLayer one unit). docs/training.md, "FSDP", has the GPU command.
"""

import pytest
import torch
from helpers import REPO, free_port, run_python

pytestmark = pytest.mark.slow  # real training processes

WORKER = str(REPO / "tests" / "fsdp_worker.py")
ENV = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def test_two_process_fsdp_training_on_cpu_matches_one_process(tmp_path):
    sharded = run_python(
        [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            WORKER,
            str(tmp_path / "fsdp.pt"),
        ],
        env_extra=ENV,
        timeout=300,
    )
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "trained on 2 process(es)" in sharded.stdout
    single = run_python([WORKER, str(tmp_path / "single.pt")], env_extra=ENV, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]

    fsdp_state, single_state = torch.load(tmp_path / "fsdp.pt"), torch.load(tmp_path / "single.pt")
    assert fsdp_state.keys() == single_state.keys() and len(fsdp_state) == 32
    for name, value in single_state.items():
        torch.testing.assert_close(fsdp_state[name], value, rtol=0, atol=1e-4, msg=name)
    # and training moved the weights by far more than that tolerance
    torch.manual_seed(0)
    from helpers import TINY

    from hf_vit import HfViTConfig, HfViTForImageClassification

    initial = HfViTForImageClassification(HfViTConfig(**TINY, num_labels=4)).state_dict()
    assert max((initial[name] - value).abs().max().item() for name, value in single_state.items()) > 1e-3
