#!/usr/bin/env python
"""How close scripts/train.py runs to the bare model step (the main job must not be input-bound).

Takes a folder written by scripts/train.py, rebuilds the same model (random init), and times the bare training step
(forward, label-smoothed cross-entropy, backward, clipping, AdamW) on one fixed in-memory batch of the run's batch
size, with the run's thread count; compares with the run's own end-to-end img/s (from all_results.json, which
includes data loading, augmentation and the per-epoch evaluations), and without the evaluations.

  python scripts/dev/train_throughput.py outputs/hf_vit-digits
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="an output folder of scripts/train.py")
    parser.add_argument("--steps", type=int, default=100, help="steps per timed repetition")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (train.py uses 1 for the digits model)")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    results_file, config_file = folder / "all_results.json", folder / "config.json"
    if not results_file.is_file() or not config_file.is_file():
        print(
            f"error: {folder} is not an output folder of scripts/train.py (needs config.json and all_results.json)",
            file=sys.stderr,
        )
        return 2

    import torch
    import torch.nn.functional as F

    from hf_vit import HfViTConfig, HfViTForImageClassification
    from hf_vit.configuration_hf_vit import image_size_pair
    from hf_vit.training import param_groups

    results = json.loads(results_file.read_text())
    if results.get("num_processes", 1) != 1:
        print("error: compare a single-process run (the bare step runs in one process)", file=sys.stderr)
        return 2
    card_batch = results["per_device_train_batch_size"]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = HfViTConfig.from_pretrained(folder)
    model = HfViTForImageClassification(config).train()
    optimizer = torch.optim.AdamW(param_groups(model, 0.05, 1e-3, None), lr=1e-3)
    pixels = torch.randn(card_batch, config.num_channels, *image_size_pair(config.image_size))
    labels = torch.randint(0, config.num_labels, (card_batch,))

    def step():
        loss = F.cross_entropy(model(pixel_values=pixels).logits, labels, label_smoothing=0.1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(max(3, args.steps // 3)):  # warm-up
        step()
    rates = []
    for _ in range(args.reps):
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        rates.append(args.steps * card_batch / (time.perf_counter() - start))
    bare = statistics.median(rates)
    images = results["train_steps"] * card_batch * results.get("gradient_accumulation_steps", 1)
    end_to_end = images / results["training_time_s"]
    print(f"bare model step: {bare:.0f} img/s (median of {args.reps} x {args.steps} steps, batch {card_batch})")
    stepping = images / (results["training_time_s"] - results.get("evaluation_time_s", 0.0))
    print(
        f"train.py end to end: {end_to_end:.0f} img/s "
        f"({results['train_steps']} steps in {results['training_time_s']} s)"
    )
    print(f"ratio: {end_to_end / bare:.2f}")
    print(
        f"without the per-epoch evaluations ({results.get('evaluation_time_s', 0.0)} s): {stepping:.0f} img/s, "
        f"ratio {stepping / bare:.2f} (data loading and the loop's own work included)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
