"""The allowed imports between the packages (``[tool.importlinter]`` in the root pyproject.toml) hold, and each
contract fails when it is broken.

The contracts are checked by import-linter (``lint-imports``), a maintained tool that reads every import
statement, those inside functions included. The second test copies the packages' sources, adds one module that
breaks each contract (a lazy import of the command in vf-core, transformers in vf-core, a backend importing
another backend or the command...) and shows that every contract then reports the breach, naming the module.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vectorfit_test_utils import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

pytest.importorskip("importlinter")

CONFIG = REPO / "pyproject.toml"
SETTINGS = tomllib.loads(CONFIG.read_text(encoding="utf-8"))["tool"]["importlinter"]
CONTRACTS = {c["id"]: c for c in SETTINGS["contracts"]}

#: contract id -> (package-relative path of a module that breaks it, its source, what the report then names)
BREACHES = {
    "layers": ("vf_core/_breach_layers.py",
               "def main():\n    from vectorfit import main  # a lazy import is an import too\n    return main\n",
               "vf_core._breach_layers -> vectorfit"),
    "backends-independent": ("vf_backends_nlp/_breach_independent.py", "import vf_backends_vision\n",
                             "vf_backends_nlp._breach_independent -> vf_backends_vision"),
    "backends-not-the-command": ("vf_backends_vision/_breach_command.py",
                                 "from vectorfit.context import RunContext\n",
                                 "vf_backends_vision._breach_command -> vectorfit.context"),
    "core-no-model-library": ("vf_core/_breach_library.py", "def load():\n    import transformers\n",
                              "vf_core._breach_library -> transformers"),
    "avf-model-library-only-in-integrations": ("vf_avf/_breach_library.py", "import timm\n",
                                               "vf_avf._breach_library -> timm"),
    "backends-no-peft": ("vf_backends_diffusion/_breach_peft.py", "import peft\n",
                         "vf_backends_diffusion._breach_peft -> peft"),
    # the cycle this issue removed: plugins -> targets -> layers -> layouts -> plugins
    "acyclic": ("vf_core/plugins/_breach_cycle.py",
                "def fallback():\n    from ..targets import select_targets\n    return select_targets\n",
                ".plugins -> .targets"),
}


def _lint(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache", "--no-logo", *args, str(CONFIG)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def test_every_contract_is_listed_here():
    assert set(CONTRACTS) == set(BREACHES)
    assert {c["type"] for c in CONTRACTS.values()} >= {"layers", "independence", "forbidden", "acyclic_siblings"}


def test_the_repository_keeps_every_contract():
    result = _lint(cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """A copy of every root package's source, importable from the returned folder."""
    site = tmp_path_factory.mktemp("contract-breach") / "site"
    for package in SETTINGS["root_packages"]:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
        shutil.copytree(list(spec.submodule_search_locations)[0], site / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return site


def _env(site: Path) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("contract", list(BREACHES))
def test_a_breach_breaks_the_contract(sources, contract):
    clean = _lint("--contract", contract, cwd=sources.parent, env=_env(sources))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    relative, source, named = BREACHES[contract]
    module = sources / relative
    module.write_text(source)
    try:
        broken = _lint("--contract", contract, cwd=sources.parent, env=_env(sources))
    finally:
        module.unlink()
    assert broken.returncode != 0, broken.stdout
    assert "BROKEN" in broken.stdout and "0 kept, 1 broken" in broken.stdout, broken.stdout
    assert named in broken.stdout, broken.stdout  # the report names the offending import
