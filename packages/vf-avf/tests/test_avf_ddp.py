"""Data-parallel training in 2 processes on gloo (CPU): DDP's ranks freeze the same vectors and end identical, and
DDP and FSDP2 (``fully_shard``) train as one process on the whole batch does: the same frozen sets, the same vectors
(float tolerance), the adapter written once, by rank 0."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vf_core import VectorFitModel
from vf_core.saving import adapter_tensors
from vf_core.testing.tiny import TinyNet

from avf_ddp_worker import CASES, ENGINES, STEPS, fsdp2_available, train, train_rank
from avf_helpers import tiny_vf

pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run every case in one pair of processes (DDP's first use costs seconds of imports per process)."""
    engines = [e for e in ENGINES if e != "fsdp2" or not fsdp2_available()]
    expected = [f"{name}-rank{r}.pt" for name, *_ in CASES for r in (0, 1)]
    expected += [f"{engine}-rank{r}.pt" for engine in engines for r in (0, 1)]
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
    found = {name: [torch.load(out / f"{name}-rank{r}.pt") for r in (0, 1)] for name, *_ in CASES}
    found.update({engine: [torch.load(out / f"{engine}-rank{r}.pt") for r in (0, 1)] for engine in engines})
    return found, out


@pytest.mark.parametrize("name", [name for name, *_ in CASES])
def test_two_ranks_freeze_the_same_vectors_and_end_identical(results, name):
    rank0, rank1 = results[0][name]
    assert rank0["frozen"] == rank1["frozen"] and rank0["history"] == rank1["history"]
    assert len(rank0["frozen"]) == STEPS and sum(map(len, rank0["frozen"])) > 0
    if name.startswith("topk_ema"):
        assert all(frozen == [] for frozen in rank0["frozen"][:3]) and len(rank0["history"]) == 3
    assert rank0["params"].keys() == rank1["params"].keys()
    assert all(torch.equal(rank0["params"][n], rank1["params"][n]) for n in rank0["params"])


@pytest.fixture(scope="module")
def one_process():
    vf = tiny_vf()
    frozen = train(vf, vf)
    return {"frozen": frozen, "vectors": adapter_tensors(vf)}


#: the key projections' biases: their true gradient is zero (softmax ignores a shift of all its logits), so Adam
#: scales rounding noise up to whole steps and they differ in the last float bits' way between any two runs
NOISE = ("blocks.0.k.bias", "blocks.1.k.bias")


@pytest.mark.parametrize("engine", ENGINES)
def test_two_processes_train_as_one_process_on_the_whole_batch(results, one_process, engine):
    if engine == "fsdp2" and fsdp2_available():
        pytest.skip(fsdp2_available())
    found, out = results
    rank0, rank1 = found[engine]
    assert rank0["frozen"] == rank1["frozen"] == one_process["frozen"]  # AVF: the same decisions everywhere
    assert sum(map(len, one_process["frozen"])) > 0
    reference = one_process["vectors"]
    assert rank0["vectors"].keys() == reference.keys()
    compared = [k for k in reference if not k.endswith(NOISE)]
    assert len(compared) == len(reference) - len(NOISE)
    for key in compared:
        torch.testing.assert_close(rank0["vectors"][key], reference[key], rtol=1e-5, atol=1e-5, msg=key)
        assert torch.equal(rank0["vectors"][key], rank1["vectors"][key]), key
    # the adapter: written by rank 0 only, and it loads
    assert (out / f"{engine}-adapter-rank0" / "adapter_model.safetensors").is_file()
    assert not (out / f"{engine}-adapter-rank1").exists()
    torch.manual_seed(0)
    loaded = VectorFitModel.from_pretrained(TinyNet(), out / f"{engine}-adapter-rank0")
    assert all(torch.equal(t, rank0["vectors"][k]) for k, t in adapter_tensors(loaded).items())
