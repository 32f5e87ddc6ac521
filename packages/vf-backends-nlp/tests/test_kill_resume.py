"""Kill a real training process (VectorFit + AVF on the Trainer) mid-run, resume it, and compare bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("vf_avf")

SCRIPT = Path(__file__).with_name("kill_resume_train.py")


def _run(out: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(out), *flags], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_killed_training_resumes_bit_identical(tmp_path):
    from safetensors.torch import load_file

    straight = tmp_path / "straight"
    done = _run(straight)
    assert done.returncode == 0, done.stderr[-2000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(killed), "--slow"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    first = killed / "checkpoint-4"
    deadline = time.time() + 300
    while time.time() < deadline and not (first / "trainer_state.json").exists():
        if proc.poll() is not None:
            pytest.fail(f"training ended before its first checkpoint: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    time.sleep(0.5)  # inside step 5 or 6, AVF state mid-schedule
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "final.safetensors").exists()
    assert not (killed / "checkpoint-12").exists()

    resumed = _run(killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = load_file(straight / "final.safetensors"), load_file(killed / "final.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        assert torch.equal(a[name], b[name]), name
