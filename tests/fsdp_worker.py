"""One process of tests/test_fsdp.py: a few AdamW steps of a tiny hf_vit, sharded with FSDP2 when launched with
torchrun (gloo, CPU; each HfViTLayer one shard unit, as scripts/accelerate_configs/fsdp.yaml), unsharded otherwise.
Writes the full trained state dict (rank 0) to the path given."""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import TINY  # noqa: E402

from hf_vit import HfViTConfig, HfViTForImageClassification  # noqa: E402


def main(output: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = HfViTForImageClassification(HfViTConfig(**TINY, num_labels=4))
    generator = torch.Generator().manual_seed(1)
    pixel_values, labels = (
        torch.randn(8, 3, 32, 32, generator=generator),
        torch.randint(0, 4, (8,), generator=generator),
    )
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world_size > 1:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        dist.init_process_group("gloo")
        mesh = init_device_mesh("cpu", (world_size,))
        for layer in model.vit.encoder.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        # each rank its half of the batch: FSDP averages the gradients, as one process on the whole batch would
        pixel_values, labels = pixel_values.chunk(world_size)[rank], labels.chunk(world_size)[rank]
        sharded = type(model.vit.encoder.layers[0].mlp.fc1.weight).__name__
        assert sharded == "DTensor", sharded
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        model(pixel_values, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    state = {
        name: (value.full_tensor() if hasattr(value, "full_tensor") else value).detach()
        for name, value in model.state_dict().items()
    }
    if rank == 0:
        torch.save(state, output)
        print(f"trained on {world_size} process(es); {sum(v.numel() for v in state.values())} values saved")
    if world_size > 1:
        # every rank waits for rank 0's save before tearing gloo down: a rank leaving early aborted the other
        # ("terminate called without an active exception") once in a full-suite run
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
