"""examples/distributed/: the accelerate loop of docs/distributed.md in one process (resumed bit-identically), under
torchrun in 2 processes on gloo (as one process on the whole batch), and through accelerate's FSDP2 and DeepSpeed
ZeRO-2 configs on GPUs (skipped without them, with the reason)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from safetensors.torch import load_file  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "distributed"
SCRIPT = EXAMPLES / "train_vectorfit.py"


def example():
    spec = importlib.util.spec_from_file_location("train_vectorfit_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def adapter(folder: Path) -> dict:
    return load_file(str(folder / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    summary = example().main(["--output", str(out)])
    return out, summary


def test_the_example_resumes_bit_identically_and_checkpoints_the_trained_tensors(one_process, tmp_path):
    straight, summary = one_process
    assert summary["steps"] == 8 and len(summary["frozen"]) == 4  # AVF: k=4 at each of its 2 steps
    state = straight / "state"
    assert (state / "model.safetensors").stat().st_size <= 2 * (straight / "adapter" / "adapter_model.safetensors"
                                                                 ).stat().st_size
    run = example()
    assert run.main(["--output", str(tmp_path), "--stop-after", "6"]) == {"stopped_at": 6}  # last save: step 4
    resumed = run.main(["--output", str(tmp_path), "--resume"])
    assert resumed["frozen"] == summary["frozen"]
    a, b = adapter(straight), adapter(tmp_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _run(command: list, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _as_one_process(one: Path, other: Path, *, atol: float) -> None:
    """The same AVF decisions and the same vectors as one process that saw every batch whole."""
    assert json.loads((other / "summary.json").read_text())["frozen"] == \
        json.loads((one / "summary.json").read_text())["frozen"]
    a, b = adapter(one), adapter(other)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key].cpu(), a[key], rtol=atol, atol=atol, msg=key)


@pytest.mark.multiprocess
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_the_example_under_torchrun_trains_as_one_process(one_process, tmp_path):
    one, _ = one_process
    out = tmp_path / "ddp"
    proc = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
                 "--output", str(out), "--batch-size", "2"])  # 2 processes x 2 = the one process's 4
    assert proc.stdout.count('"processes": 2') == 1  # rank 0 alone reports and writes
    _as_one_process(one, out, atol=1e-5)


def _gpu_launch(config: str, tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / Path(config).stem
    accelerate = shutil.which("accelerate") or pytest.skip("no accelerate launcher on PATH")
    _run([accelerate, "launch", "--config_file", str(EXAMPLES / config), "--num_processes", "1", str(SCRIPT),
          "--output", str(out), *extra])
    return out


@pytest.mark.multiprocess
@pytest.mark.skipif(not torch.cuda.is_available(), reason="accelerate runs FSDP on GPUs only (on CPUs FSDP2 is"
                    " tested with torch's fully_shard: packages/vf-avf/tests/test_avf_ddp.py)")
def test_fsdp2_through_accelerate(tmp_path):
    out = _gpu_launch("fsdp2.yaml", tmp_path)
    one = tmp_path / "one"
    _run([sys.executable, str(SCRIPT), "--output", str(one)])  # the same GPU, no FSDP
    _as_one_process(one, out, atol=1e-4)


@pytest.mark.multiprocess
@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("deepspeed") is None,
                    reason="DeepSpeed ZeRO-2 needs CUDA GPUs and the deepspeed package (not installed here)")
def test_deepspeed_zero2_through_accelerate(tmp_path):
    out = _gpu_launch("deepspeed_zero2.yaml", tmp_path, "--no-avf", "--stop-after", "6")
    states = list((out / "state").rglob("*model_states.pt"))
    assert states, sorted(p.name for p in (out / "state").rglob("*"))
    module = torch.load(states[0], map_location="cpu", weights_only=False)["module"]
    assert all(".parts." in k or "classifier" in k for k in module)  # the trained tensors, not the frozen base
    _gpu_launch("deepspeed_zero2.yaml", tmp_path, "--no-avf", "--resume")
    one = tmp_path / "one"
    _run([sys.executable, str(SCRIPT), "--output", str(one), "--no-avf"])
    a, b = adapter(one), adapter(out)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-4, msg=key)
