"""vf-core never needs transformers, timm, diffusers or peft at import time (the command's own check is in the
repository's tests/; the import contracts forbid the imports themselves)."""

from __future__ import annotations

import subprocess
import sys

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'transformers', 'timm', 'diffusers', 'peft'}:
            raise ImportError(f'{name} is blocked in this test')
sys.meta_path.insert(0, Block())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + code], capture_output=True, text=True, timeout=300)


def test_core_imports_and_works_without_model_libraries():
    res = _run("""
import torch
import vf_core, vf_core.svd, vf_core.saving, vf_core.tasks, vf_core.metrics
from vf_core import VectorFitConfig, get_vectorfit_model
from vf_core.plugins import list_families
list_families()  # backends declare families without importing their library
net = torch.nn.Sequential(torch.nn.Linear(4, 4))
get_vectorfit_model(net, VectorFitConfig(target_modules=['0'])).print_trainable_parameters()
print('ok')
""")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("ok")
