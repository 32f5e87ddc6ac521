"""The body of the 2-process DDP test (a module of its own, so spawned processes can import it)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from vf_avf import VectorFreezer

from avf_helpers import loss_of, tiny_vf, trainable

STEPS = 14

#: (name, freezing config, sync_ranks, whether each rank builds its model from its own seed)
CASES = [
    # every rank loads the same weights (as from_pretrained does): decisions agree without any broadcast
    ("topk_ema", {"policy": "topk_ema", "t_i": 3, "t_f": 3, "n_f": 3, "k": 5}, False, False),
    ("dropout", {"policy": "dropout", "p": 0.3, "seed": 1}, False, False),
    # ranks whose initial values differ measure different strengths: rank 0's decisions are broadcast
    ("topk_ema-synced", {"policy": "topk_ema", "t_i": 3, "t_f": 3, "n_f": 3, "k": 5}, True, True),
]


def train_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for name, config, sync_ranks, own_seed in CASES:
            vf = tiny_vf(seed=rank if own_seed else 0)
            model = DistributedDataParallel(vf)  # broadcasts rank 0's parameters
            opt = torch.optim.AdamW(trainable(vf), lr=0.05, weight_decay=0.01)
            freezer = VectorFreezer(model, config, total_steps=STEPS, sync_ranks=sync_ranks)
            frozen_per_step = []
            for step in range(STEPS):
                loss_of(model, step, rank).backward()  # each rank its own data
                frozen_per_step.append(sorted(freezer.step(step)))
                opt.step()
                opt.zero_grad()
            torch.save({"params": {n: p.detach().clone() for n, p in vf.named_parameters() if p.requires_grad},
                        "frozen": frozen_per_step, "history": [r.to_dict()["frozen"] for r in freezer.history]},
                       os.path.join(out_dir, f"{name}-rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
