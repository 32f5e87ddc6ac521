"""Data-parallel training (DDP on gloo, 2 processes): the same frozen sets and parameters on both ranks."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from avf_ddp_worker import CASES, STEPS, train_rank

pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run every case in one pair of processes (DDP's first use costs seconds of imports per process)."""
    expected = [f"{name}-rank{r}.pt" for name, *_ in CASES for r in (0, 1)]
    for attempt in range(2):
        out = tmp_path_factory.mktemp("ddp")
        try:
            mp.spawn(train_rank, args=(2, str(out / "init"), str(out)), nprocs=2, join=True)
            break
        except mp.ProcessExitedException:
            # gloo's threads can abort a worker while it shuts down (std::terminate at teardown), after the
            # results are written; a crash before that is retried once and then fails the test
            if all((out / f).exists() for f in expected):
                break
            if attempt == 1:
                raise
    return {name: [torch.load(out / f"{name}-rank{r}.pt") for r in (0, 1)] for name, *_ in CASES}


@pytest.mark.parametrize("name", [name for name, *_ in CASES])
def test_two_ranks_freeze_the_same_vectors_and_end_identical(results, name):
    rank0, rank1 = results[name]
    assert rank0["frozen"] == rank1["frozen"] and rank0["history"] == rank1["history"]
    assert len(rank0["frozen"]) == STEPS and sum(map(len, rank0["frozen"])) > 0
    if name.startswith("topk_ema"):
        assert all(frozen == [] for frozen in rank0["frozen"][:3]) and len(rank0["history"]) == 3
    assert rank0["params"].keys() == rank1["params"].keys()
    assert all(torch.equal(rank0["params"][n], rank1["params"][n]) for n in rank0["params"])
