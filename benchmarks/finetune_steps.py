"""Time of one fine-tuning step (forward + backward, batch 48, bf16 autocast where the CPU has it) by how many
blocks are trained, efficientnet_lite0 at 224 px: what `--train-blocks N|all` costs per epoch before anyone
waits 15 epochs to learn it.

    cd benchmarks && FINEGRAIN_THREADS=1 python finetune_steps.py --blocks 1 3 5 8 all --note "what else ran"

The inputs are random activations of the right shape (the trunk's output for N blocks, the normalised image for
`all`): a step's time does not depend on their values. Writes results/finetune_steps.json.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from _common import machine, write_result

BATCH = 48
TRAIN_IMAGES = 2903  # cub100's train split: steps per epoch = ceil(2903 / 48)


def step_seconds(train_blocks: int | str, repeats: int, bf16: bool, size: int = 224) -> float:
    """Fastest of `repeats` timed steps (after one warm-up step) of the top network for `train_blocks`."""
    from finegrain.backbones import get_backbone
    from finegrain.finetune.network import staged_copy
    from finegrain.finetune.trainer import TopNetwork

    staged = staged_copy(get_backbone("efficientnet_lite0"))
    split = staged.split_index(train_blocks)
    x = torch.randn(BATCH, 3, size, size)
    with torch.no_grad():
        for stage in staged.stages[:split]:
            x = stage(x)
    top = TopNetwork([staged.stages[i] for i in range(split, len(staged.stages))], 1280, 100, 0.2)
    for p in top.parameters():
        p.requires_grad_(True)
    top.train_mode()
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = top(x).float().logsumexp(1).mean()
        loss.backward()
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def main() -> None:
    from finegrain.finetune.trainer import cpu_has_bf16
    from finegrain.threads import set_thread_budget

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", nargs="+", default=["1", "3", "5", "8", "all"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224], help="input sizes (efficientnet_lite0@SIZE)")
    ap.add_argument("--precision", choices=("auto", "fp32"), default="auto", help="auto: bf16 where the CPU has it")
    ap.add_argument("--note", default="", help="what else ran on the machine")
    args = ap.parse_args()
    threads = int(os.environ.get("FINEGRAIN_THREADS", os.cpu_count() or 1))
    set_thread_budget(threads)
    bf16 = cpu_has_bf16() and args.precision == "auto"
    rows = []
    for size in args.sizes:
        for blocks in args.blocks:
            n: int | str = blocks if blocks == "all" else int(blocks)
            s = step_seconds(n, args.repeats, bf16, size)
            epoch = s * -(-TRAIN_IMAGES // BATCH)
            rows.append({"size": size, "train_blocks": blocks, "step_s": round(s, 3), "cub100_epoch_s": round(epoch, 1)})
            print(f"{size} px, --train-blocks {blocks}: {s:.2f} s per step of {BATCH}, {epoch:.0f} s per cub100 "
                  "epoch", flush=True)
    name = "finetune_steps" if args.sizes == [224] and bf16 == cpu_has_bf16() else "finetune_steps_sizes"
    write_result(name, {"machine": machine(), "threads": threads, "bf16": bf16, "batch": BATCH,
                                    "other_load": args.note, "rows": rows})


if __name__ == "__main__":
    main()
