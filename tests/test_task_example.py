"""A third-party task: examples/vf-task-example, installed with pip and run by name with no change to any package.

The package declares a family and the ``toy-regression`` task through its ``vectorfit`` entry point; the
command lists it, trains it by name (``--task toy-regression``) or by recognition, and evaluates the run.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys

import pytest
from vf_core.plugins import get_plugin_manager, list_families, list_tasks, reset_plugin_manager

from vectorfit import main
from vectorfit_test_utils import REPO

EXAMPLE = REPO / "examples" / "vf-task-example"
TOY = ["--model", "toy-mlp", "--data", "toy-sums", "--no-progress"]


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    """examples/vf-task-example pip-installed into a folder of its own (the venv stays untouched)."""
    if importlib.util.find_spec("pip") is None:  # pragma: no cover - environments without pip (uv)
        pytest.skip("needs pip to install the example package")
    target = tmp_path_factory.mktemp("task-example") / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-input", "--disable-pip-version-check", "--target", str(target), str(EXAMPLE)],
                   check=True, capture_output=True, text=True, timeout=300)
    return target


@pytest.fixture
def example_installed(example_site, fresh_plugins):
    """The installed example on sys.path for one test; gone again afterwards."""
    paths = list(sys.path)
    sys.path.insert(0, str(example_site))
    importlib.invalidate_caches()
    reset_plugin_manager()
    try:
        yield example_site
    finally:
        sys.path[:] = [p for p in sys.path if p in paths]
        for module in [m for m in sys.modules if m == "vf_task_example" or m.startswith("vf_task_example.")]:
            del sys.modules[module]
        importlib.invalidate_caches()
        reset_plugin_manager()


def test_the_example_task_is_unknown_until_installed(fresh_plugins, tmp_path, capsys):
    if importlib.util.find_spec("vf_task_example") is not None:
        pytest.skip("vf-task-example is installed in this environment")
    assert "toy-regression" not in list_tasks()
    assert main(["train", "--task", "toy-regression", *TOY, "--output", str(tmp_path / "o")]) == 2
    assert "unknown task 'toy-regression'" in capsys.readouterr().err


def test_the_installed_example_task_trains_by_name(example_installed, tmp_path, capsys):
    assert get_plugin_manager().get_plugin("vf_task_example") is not None  # through its entry point
    task = list_tasks()["toy-regression"]
    assert task.backend == "toy" and task.headline == "eval_pearson" and "toy-mlp" in list_families()
    assert main(["list"]) == 0
    assert "task toy-regression (backend toy" in capsys.readouterr().out

    out = tmp_path / "toy"
    assert main(["train", "--task", "toy-regression", *TOY, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("eval_pearson:")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "regression" and metrics["primary_metric"] == "eval_pearson"
    assert metrics["eval_pearson"] > 0.5 and metrics["stalled"] is False
    assert metrics["epochs"] == task.defaults["epochs"] and metrics["batch_size"] == task.defaults["batch_size"]
    run = json.loads((out / "run.json").read_text())
    assert run["task_name"] == "toy-regression" and run["backend"] == "toy" and run["args"]["avf_k"] == 1
    for name in ("adapter/adapter_config.json", "plots/weight_change_spectra.png", "strengths.json",
                 "avf_history.json"):
        assert (out / name).is_file(), name

    assert main(["evaluate", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["eval_pearson"] == pytest.approx(metrics["eval_pearson"], rel=1e-5)


def test_the_installed_example_task_is_recognised_and_takes_command_line_settings(example_installed, tmp_path):
    out = tmp_path / "toy-svft"
    assert main(["train", *TOY, "--method", "svft", "--epochs", "2", "--no-plots", "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    run = json.loads((out / "run.json").read_text())
    assert run["task_name"] == "toy-regression" and run["args"]["task"] == "auto"  # recognised, not named
    assert metrics["epochs"] == 2.0 and metrics["method"] == "svft"  # the command line beats the task's default
    assert metrics["trainable_breakdown"]["m"] > 0
