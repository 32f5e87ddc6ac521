"""The body of the 2-process data-parallel test (a module of its own, so spawned processes can import it): DDP's
frozen sets on both ranks, and DDP and FSDP2 (``fully_shard``) against one process that sees the whole batch."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from vf_avf import VectorFreezer
from vf_core.saving import adapter_tensors

from avf_helpers import batch, loss_of, tiny_vf, trainable

STEPS = 14

#: (name, freezing config, sync_ranks, whether each rank builds its model from its own seed)
CASES = [
    # every rank loads the same weights (as from_pretrained does): decisions agree without any broadcast
    ("topk_ema", {"policy": "topk_ema", "t_i": 3, "t_f": 3, "n_f": 3, "k": 5}, False, False),
    ("dropout", {"policy": "dropout", "p": 0.3, "seed": 1}, False, False),
    # ranks whose initial values differ measure different strengths: rank 0's decisions are broadcast
    ("topk_ema-synced", {"policy": "topk_ema", "t_i": 3, "t_f": 3, "n_f": 3, "k": 5}, True, True),
]


#: the data-parallel engines checked against one process: each of 2 ranks sees half of every batch
ENGINES = ("ddp", "fsdp2")
AVF = {"policy": "topk_ema", "t_i": 3, "t_f": 3, "n_f": 3, "k": 5}  # AVF steps 3, 6, 9


def fsdp2_available() -> str:
    """Why FSDP2 cannot run here ('' when it can)."""
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError as exc:  # pragma: no cover - older torch
        return f"torch {torch.__version__} has no torch.distributed.fsdp.fully_shard ({exc})"
    return ""


def whole_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of ``step`` for one process: the two ranks' halves, rank 0's first."""
    halves = [batch(step, rank) for rank in (0, 1)]
    return torch.cat([x for x, _ in halves]), torch.cat([y for _, y in halves])


def train(model, vf, *, rank: int = 0, world: int = 1) -> list:
    """STEPS optimizer steps with AVF on ``model`` (``vf`` itself or a wrapper); returns the frozen set of each step.
    The optimizer is built here, after any sharding (FSDP puts new parameters in place)."""
    optimizer = torch.optim.AdamW(vf.parameter_groups(0.05), weight_decay=0.01)
    freezer = VectorFreezer(model, AVF, total_steps=STEPS)
    frozen = []
    for step in range(STEPS):
        x, y = whole_batch(step)
        share = len(y) // world
        x, y = x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]
        torch.nn.functional.cross_entropy(model(x), y).backward()  # the mean over the share; DDP/FSDP average
        frozen.append(sorted(freezer.step(step)))
        optimizer.step()
        optimizer.zero_grad()
    return frozen


def wrap(engine: str, vf):
    if engine == "ddp":
        return DistributedDataParallel(vf)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for block in vf.model.blocks:  # each block a unit of its own, then the rest (head) at the root
        fully_shard(block, mesh=mesh)
    fully_shard(vf, mesh=mesh)
    return vf


def train_engines(rank: int, world: int, out_dir: str) -> None:
    for engine in ENGINES:
        if engine == "fsdp2" and fsdp2_available():
            continue
        vf = tiny_vf()
        frozen = train(wrap(engine, vf), vf, rank=rank, world=world)
        vf.save_pretrained(os.path.join(out_dir, f"{engine}-adapter-rank{rank}"))  # every rank calls; rank 0 writes
        vectors = {k: v for k, v in adapter_tensors(vf).items()}  # whole tensors, gathered from the shards
        torch.save({"frozen": frozen, "vectors": vectors}, os.path.join(out_dir, f"{engine}-rank{rank}.pt"))


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
        train_engines(rank, world, out_dir)
    finally:
        dist.destroy_process_group()
