"""The ``vectorfit`` command with a throwaway in-process task (no transformers, timm or diffusers needed).

The fake task trains ``TinyNet`` on synthetic tensors with a few plain steps, through the same
:class:`~vectorfit.context.RunContext` every real backend gets (``prepare``, ``optimizer_groups``, ``finish``),
so the run directory, the adapter, the plots, and ``evaluate`` / ``merge`` / ``inspect`` / ``plot`` are all
exercised through the command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from vf_core import VectorFitModel
from vf_core.metrics import classification_metrics, classification_stall, compute_metrics, stall_verdict
from vf_core.plugins import get_plugin_manager, hookimpl, reset_plugin_manager
from vf_core.tasks import NO, SURE, Task
from vf_core.testing.tiny import TinyNet

from vectorfit import main
from vectorfit.errors import CLIError
from vectorfit.methods import MethodSpec, apply_method, restore_trained
from vectorfit.rundir import Run
from vectorfit.training import clip_vector_gradients, optimizer_groups

pytestmark = pytest.mark.usefixtures("isolated_cache")

TARGETS = r"blocks\.\d+\.(q|k|v|o|up|down)"


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 5, 8, generator=g)
    y = (x.mean((1, 2)) > 0).long() + (x[:, 0, 0] > 1).long()
    return x, y


class FakeRunner:
    def load_model(self, spec, *, run=None, num_labels=None):
        torch.manual_seed(0)
        model = TinyNet()
        if spec != "tiny":
            state = torch.load(Path(spec) / "model.pt", weights_only=True)
            model.load_state_dict(state)
        return model

    def train(self, ctx):
        args = ctx.settings
        x, y = _data()
        model = self.load_model(args.model)
        ctx.record_run(model_path=args.model, label_names=["a", "b", "c"], kind="classification", num_train=48,
                       num_eval=16)
        w0 = ctx.initial_weights(model)
        prepared = ctx.prepare(model, total_steps=6)
        opt = torch.optim.AdamW(ctx.optimizer_groups(prepared), lr=args.lr)
        recorder = ctx.strength_recorder(prepared)
        for step in range(args.max_steps or 6):
            loss = torch.nn.functional.cross_entropy(prepared.model(x[:48]), y[:48])
            loss.backward()
            ctx.clip_vector_gradients(prepared)
            opt.step()
            opt.zero_grad()
            if recorder:
                recorder.record(step + 1)
        metrics = self._metrics(prepared.model, x[48:], y[48:])

        def save_full(directory):
            directory.mkdir(parents=True, exist_ok=True)
            torch.save(prepared.model.state_dict(), directory / "model.pt")

        return ctx.finish(prepared, metrics, train_seconds=0.5, save_full_model=save_full, w0=w0,
                          recorder=recorder, load_full=lambda run: self.load_model(str(run.model_dir)))

    @torch.no_grad()
    def _metrics(self, model, x, y):
        model.eval()
        return {f"eval_{k}": v for k, v in compute_metrics("classification", model(x).numpy(), y.numpy(), 3).items()}

    def evaluate(self, model, ctx):
        x, y = _data()
        return self._metrics(model, x[48:], y[48:])

    def save_model(self, model, directory, run):
        Path(directory).mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), Path(directory) / "model.pt")


def _claim_model(spec: str) -> int:
    return SURE if spec == "tiny" or (Path(spec) / "model.pt").is_file() else NO


FAKE_TASK = Task(name="fake-classification", backend="fake", description="a test double", engine="plain loop",
                 aliases=("classification",), models="TinyNet", data="random tensors",
                 model_aliases={"tiny": "TinyNet"}, datasets={"synthetic": "random tensors"},
                 claim_model=_claim_model, claim_data=lambda s: SURE if s == "synthetic" else NO, runner=FakeRunner,
                 metrics=classification_metrics, headline="eval_accuracy", stalled=classification_stall)


class FakePlugin:
    @hookimpl
    def vectorfit_tasks(self):
        return [FAKE_TASK]


@pytest.fixture
def fake_backend(monkeypatch):
    monkeypatch.setenv("VECTORFIT_DISABLE_PLUGINS", "vf_backends_nlp_tasks,vf_backends_vision_tasks")
    reset_plugin_manager()
    pm = get_plugin_manager()
    plugin = FakePlugin()
    pm.register(plugin, name="fake-tasks")
    try:
        yield
    finally:
        pm.unregister(plugin)
        reset_plugin_manager()


BASE = ["train", "--model", "tiny", "--data", "synthetic", "--target-modules", TARGETS, "--heads", "head",
        "--no-avf", "--lr", "0.05"]


def test_train_evaluate_merge_inspect_plot(fake_backend, tmp_path, capsys):
    full = tmp_path / "full"
    assert main([*BASE, "--method", "full", "--output", str(full), "--lr", "1e-3"]) == 0
    out = tmp_path / "vf"
    assert main([*BASE, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "eval_accuracy" in printed and "trainable params" in printed and str(out / "adapter") in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"eval_accuracy", "trainable_params", "total_params", "train_seconds"} <= set(metrics)
    # per block: q, k, v, o (8x8): 8 singular values + 8 biases; up (12x8): 8 + 12; down (8x12): 8 + 8; head 8x3 + 3
    assert metrics["trainable_params"] == 2 * (4 * 16 + 20 + 16) + 27
    vf = VectorFitModel.from_pretrained(FakeRunner().load_model("tiny"), out / "adapter")
    assert len(vf.vectors) == 2 * 6 * 2
    for name in ("training_strength.png", "weight_change_spectra.png", "leading_sv_change.png"):
        assert (out / "plots" / name).is_file()
    assert metrics["compared_with_full_run"] == str(full)

    assert main(["evaluate", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])
    merged = tmp_path / "merged"
    assert main(["merge", str(out), "--output", str(merged)]) == 0
    capsys.readouterr()
    plain = FakeRunner().load_model(str(merged))
    x, _ = _data()
    with torch.no_grad():
        again = restore_trained(FakeRunner().load_model("tiny"), "vectorfit", out / "adapter")
        assert torch.allclose(plain(x), again(x), atol=1e-5)

    assert main(["inspect", str(out / "adapter"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "vectorfit adapter" and info["vectors"] == 24
    assert info["roles"] == []  # a regex --target-modules carries no roles (a family declaration does)
    assert info["trainable_params"] == metrics["trainable_params"]
    assert main(["inspect", str(out)]) == 0
    assert "run directory" in capsys.readouterr().out
    assert main(["plot", str(out), "--output", str(tmp_path / "p")]) == 0
    assert "compared with full fine-tuning" in capsys.readouterr().out


@pytest.mark.parametrize("method,extra", [("vectorfit", ["--no-bias"]), ("vectorfit", ["--roles", "q,k,v,o"]),
                                          ("svfit", ["--svfit-rank", "2"]), ("svft", []), ("bitfit", []),
                                          ("full", [])])
def test_methods_through_the_command(fake_backend, tmp_path, method, extra):
    out = tmp_path / "r"
    assert main([*BASE, "--method", method, *extra, "--output", str(out), "--no-plots", "--max-steps", "1"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == method and 0 < m["trainable_params"] <= m["total_params"]
    if method == "bitfit":
        biases = sum(p.numel() for n, p in TinyNet().named_parameters() if n.endswith("bias"))
        assert m["trainable_params"] == biases + 8 * 3  # every bias + the head's weight
    if "--no-bias" in extra:
        assert m["trainable_breakdown"]["bias"] == 0


def test_undeclared_model_gets_inferred_roles_and_says_so(fake_backend, tmp_path, capsys):
    """No backend declares TinyNet: without --target-modules its roles and head are inferred from its structure, one
    line on stderr says what was chosen, and inspect prints the mapping."""
    out = tmp_path / "r"
    assert main(["train", "--model", "tiny", "--data", "synthetic", "--no-avf", "--output", str(out), "--no-plots",
                 "--max-steps", "1"]) == 0
    err = capsys.readouterr().err
    assert ("vectorfit: family inferred for TinyNet: 2 blocks, roles q, k, v, o, f1, f2 from q, k, v, o, up, down"
            in err.splitlines())
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["family"] == "inferred:TinyNet"
    assert main(["inspect", "--model", "tiny"]) == 0
    printed = capsys.readouterr().out
    assert "family inferred:TinyNet (inferred from its structure, no backend declares TinyNet)" in printed
    assert r"blocks (?:blocks\.\d+); in each: q <- q; k <- k; v <- v; o <- o; f1 <- up; f2 <- down" in printed


def test_errors_are_one_line(fake_backend, tmp_path, capsys):
    cases = [
        (["train", "--model", "nope", "--data", "synthetic", "--output", str(tmp_path / "o")], "unknown model 'nope'"),
        (["train", "--model", "tiny", "--data", str(tmp_path / "x.csv"), "--output", str(tmp_path / "o")],
         "no such file"),
        (["train", "--model", "tiny", "--data", "synthetic"], "--output"),
        (["train", "--model", "tiny", "--data", "synthetic", "--output", str(tmp_path / "o"), "--target-modules",
          "nothing_matches"], "no module matched"),
        (["train", "--model", "tiny", "--data", "synthetic", "--output", str(tmp_path / "o"), "--target-modules",
          TARGETS], "--heads"),
        (["train", "--model", "tiny", "--data", "synthetic", "--output", str(tmp_path / "o"), "--roles", "q,x"],
         "roles"),
        (["train", "--model", "tiny", "--data", "synthetic", "--output", str(tmp_path / "o"), "--backend", "zzz"],
         "invalid choice"),
        (["evaluate", str(tmp_path)], "not a run directory"),
        (["inspect", str(tmp_path / "missing")], "unknown model"),
        (["train", "--output", str(tmp_path / "fresh"), "--resume"], "nothing to resume"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, (argv, err)


def test_finished_run_is_not_overwritten(fake_backend, tmp_path, capsys):
    out = tmp_path / "o"
    argv = [*BASE, "--output", str(out), "--no-plots", "--max-steps", "1"]
    assert main(argv) == 0
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_duplicate_task_names_are_rejected(fake_backend, capsys):
    pm = get_plugin_manager()
    twin = FakePlugin()
    pm.register(twin, name="fake-tasks-twin")
    try:
        assert main(["list"]) == 2
        err = capsys.readouterr().err
        assert "provided by both" in err and "'fake-tasks'" in err and "'fake-tasks-twin'" in err
    finally:
        pm.unregister(twin)


def test_list_and_help(fake_backend, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "task fake-classification (backend fake" in out and "backend fake" in out
    assert "tiny" in out and "synthetic" in out and "vectorfit" in out
    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    fake = listed["tasks"]["fake-classification"]
    assert fake["backend"] == "fake" and fake["aliases"] == ["classification"] and fake["missing"] == []
    assert listed["backends"]["fake"]["tasks"] == ["fake-classification"] and "vectorfit" in listed["methods"]
    for command in ("train", "evaluate", "merge", "inspect", "plot", "list"):
        assert main([command, "--help"]) == 0
        assert f"usage: vectorfit {command}" in capsys.readouterr().out


def test_compute_metrics():
    m = compute_metrics("classification", [[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], [1, 0, 0])
    assert m == {"accuracy": pytest.approx(2 / 3), "majority_accuracy": pytest.approx(2 / 3), "predicted_classes": 2}
    m = compute_metrics("classification", [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], [0, 1, 2, 1], 3)
    assert m["accuracy"] == 0.75 and 0 < m["f1_macro"] < 1
    r = compute_metrics("regression", [[1.0], [2.0], [3.0], [4.0]], [1.5, 2.0, 3.5, 3.9])
    assert r["pearson"] > 0.9 and r["spearman"] == pytest.approx(1.0) and r["mse"] > 0


def test_method_spec_round_trip_and_labels():
    spec = MethodSpec("vectorfit", config={"train_bias": False}, avf=None)
    assert MethodSpec.from_json(spec.to_json()) == spec
    assert spec.label() == "vectorfit (no AVF, sigma only)"
    assert spec.vectorfit_config().bias_trained is False
    assert MethodSpec("lora", lora_r=1).label() == "lora r=1"
    with pytest.raises(CLIError, match="unknown method"):
        apply_method(TinyNet(), MethodSpec("prefix"))


def test_core_cli_imports_no_backend_library():
    code = ("import sys, vectorfit, vectorfit.cli, vectorfit.methods, vectorfit.training, vectorfit.plots;"
            "heavy=[m for m in ('transformers','timm','diffusers','peft','matplotlib') if m in sys.modules];"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_run_dir_errors(tmp_path):
    with pytest.raises(CLIError, match="does not exist"):
        Run.open(tmp_path / "nope")
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(CLIError, match="not valid JSON"):
        Run.open(tmp_path)


# ------------------------------------------------------------------------------------------------ stalls
def test_stall_verdict_known_values():
    majority = compute_metrics("classification", [[1.0, 0.0]] * 4, [0, 0, 0, 1])
    assert majority["accuracy"] == 0.75 and majority["majority_accuracy"] == 0.75
    assert "same class" in stall_verdict(majority, "classification")
    below = {"eval_accuracy": 0.55, "eval_majority_accuracy": 0.578, "eval_predicted_classes": 2}
    assert "at or below" in stall_verdict(below, "classification")
    assert stall_verdict({"eval_accuracy": 0.70, "eval_majority_accuracy": 0.578, "eval_predicted_classes": 2},
                         "classification") is None
    flat = compute_metrics("regression", [[0.3]] * 4, [1.0, 2.0, 3.0, 4.0])
    assert stall_verdict(flat, "regression") == "every eval prediction is the same value"
    assert stall_verdict(compute_metrics("regression", [[1.0], [2.0], [2.5], [4.0]], [1.0, 2.0, 3.0, 4.0]),
                         "regression") is None


def test_a_stalled_run_says_so(fake_backend, tmp_path, capsys, monkeypatch):
    def constant(self, model, x, y):  # a model that answers class 0 for everything
        logits = torch.zeros(len(y), 3)
        logits[:, 0] = 1.0
        return {f"eval_{k}": v for k, v in compute_metrics("classification", logits.numpy(), y.numpy(), 3).items()}

    monkeypatch.setattr(FakeRunner, "_metrics", constant)
    out = tmp_path / "stalled"
    assert main([*BASE, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("WARNING: this run stalled: every eval example gets the same class")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stalled"] is True and "same class" in metrics["stalled_reason"]
    assert metrics["eval_predicted_classes"] == 1


def test_a_run_that_learns_is_not_flagged(fake_backend, tmp_path):
    out = tmp_path / "fine"
    assert main([*BASE, "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stalled"] is (metrics["eval_accuracy"] <= metrics["eval_majority_accuracy"])


# ------------------------------------------------------------------------------------------------ per-kind rates
def _prepared(method: str, **spec_kw):
    model = FakeRunner().load_model("tiny")
    spec = MethodSpec(method, config={"target_modules": TARGETS, "modules_to_save": ["head"]}, **spec_kw)
    return apply_method(model, spec, total_steps=6)


@pytest.mark.parametrize("method", ["vectorfit", "svft", "bitfit", "full"])
def test_optimizer_groups_hold_every_trainable_parameter_once(method):
    import argparse

    prepared = _prepared(method)
    args = argparse.Namespace(lr=1e-2, lr_sigma=None, lr_bias=1e-3, lr_head=5e-2, weight_decay=0.1)
    groups = optimizer_groups(prepared, args)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in prepared.model.parameters() if p.requires_grad}
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] == 5e-2 and {id(p) for p in by_name["head"]["params"]} == {
        id(p) for p in prepared.base.get_submodule("head").parameters()}
    if method in ("vectorfit", "bitfit"):
        assert by_name["bias"]["lr"] == 1e-3 and by_name["bias"]["weight_decay"] == 0.0
    if method in ("vectorfit", "svft"):
        assert by_name["sigma"]["lr"] == 1e-2 and by_name["sigma"]["weight_decay"] == 0.1
        kinds = {v.kind for v in prepared.vf.vectors if any(v.parameter is p for p in by_name["sigma"]["params"])}
        assert kinds == ({"sigma"} if method == "vectorfit" else {"m"})
    if method == "full":
        assert by_name["other"]["lr"] == 1e-2


def test_per_kind_rates_reach_the_optimizer(fake_backend, tmp_path):
    """Biases at a rate of (almost) zero do not move while the singular values and the head train."""
    out = tmp_path / "kinds"
    assert main([*BASE, "--output", str(out), "--lr-bias", "1e-12", "--no-plots"]) == 0
    vf = VectorFitModel.from_pretrained(FakeRunner().load_model("tiny"), out / "adapter")
    base = FakeRunner().load_model("tiny")
    biases = [v for v in vf.vectors if v.kind == "bias"]
    assert biases
    for v in biases:
        torch.testing.assert_close(v.parameter, base.get_submodule(v.module).bias, atol=1e-9, rtol=0)
    assert not torch.allclose(vf.get_base_model().head.weight, base.head.weight)  # the head did train


def test_clip_vector_gradients_bounds_each_vector():
    prepared = _prepared("vectorfit")
    x, y = _data()
    torch.nn.functional.cross_entropy(prepared.model(x[:48]), y[:48]).mul(100).backward()
    clip_vector_gradients(prepared.vf, 1e-3)
    norms = [float(v.parameter.grad.norm()) for v in prepared.vf.vectors if v.parameter.grad is not None]
    assert norms and max(norms) <= 1e-3 * (1 + 1e-5)


@pytest.mark.parametrize("argv, message", [
    (["--method", "full", "--lr-sigma", "1e-3"], "--lr-sigma applies to vectorfit"),
    (["--lr-bias", "-1"], "--lr-bias must be positive"),
    (["--method", "bitfit", "--max-grad-norm-per-vector", "1"], "--max-grad-norm-per-vector applies"),
    (["--method", "svfit", "--sigma-parametrization", "relative"], "--sigma-parametrization applies"),
])
def test_bad_per_kind_options(fake_backend, tmp_path, capsys, argv, message):
    assert main([*BASE, "--output", str(tmp_path / "bad"), *argv]) == 2
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ old runs
#: run.json's "method" as written before the options became a VectorFitConfig dict (flat, renamed fields)
OLD_METHODS = [
    {"name": "vectorfit", "roles": ["q", "k", "v", "o", "f1", "f2"], "train_bias": False, "target_modules": TARGETS,
     "modules_to_save": ["head"], "svfit_rank": None, "svfit_energy": None, "svft_pattern": "banded",
     "svft_off_diagonals": 2, "lora_r": 8, "lora_alpha": None, "lora_dropout": 0.0, "adalora_init_r": None,
     "avf": None, "sigma_parametrization": "relative"},
    {"name": "svfit", "roles": ["q", "k", "v", "o"], "train_bias": None, "target_modules": None,
     "modules_to_save": None, "svfit_rank": 4, "svfit_energy": None, "svft_pattern": "banded",
     "svft_off_diagonals": 2, "lora_r": 8, "lora_alpha": None, "lora_dropout": 0.0, "adalora_init_r": None,
     "avf": None},
    {"name": "svft", "roles": ["q", "k", "v", "o", "f1", "f2"], "train_bias": None, "target_modules": None,
     "modules_to_save": None, "svfit_rank": None, "svfit_energy": None, "svft_pattern": "random",
     "svft_off_diagonals": 1, "lora_r": 8, "lora_alpha": None, "lora_dropout": 0.0, "adalora_init_r": None,
     "avf": None},
    {"name": "lora", "roles": ["q", "v"], "train_bias": None, "target_modules": None, "modules_to_save": None,
     "svfit_rank": None, "svfit_energy": None, "svft_pattern": "banded", "svft_off_diagonals": 2, "lora_r": 4,
     "lora_alpha": 16.0, "lora_dropout": 0.1, "adalora_init_r": None, "avf": None},
]


@pytest.mark.parametrize("old", OLD_METHODS, ids=[m["name"] for m in OLD_METHODS])
def test_method_spec_reads_an_old_run_json(old):
    spec = MethodSpec.from_json(old)
    assert spec.name == old["name"] and spec.roles == old["roles"] and spec.lora_r == old["lora_r"]
    assert MethodSpec.from_json(spec.to_json()) == spec
    if old["name"] == "vectorfit":
        cfg = spec.vectorfit_config()
        assert (cfg.train_bias, cfg.sigma_parametrization, cfg.target_modules) == (False, "relative", TARGETS)
        assert spec.label() == "vectorfit (no AVF, sigma only, relative sigma)"
        assert "pattern" not in spec.config and "rank" not in spec.config  # only what the method read then
    if old["name"] == "svfit":
        assert spec.vectorfit_config().rank == 4 and spec.label() == "svfit (r=4, roles q,k,v,o)"
    if old["name"] == "svft":
        cfg = spec.vectorfit_config()
        assert (cfg.pattern, cfg.off_diagonals) == ("random", 1)
    if old["name"] == "lora":
        assert (spec.lora_alpha, spec.lora_dropout, spec.config) == (16.0, 0.1, {"roles": ["q", "v"]})


def test_an_old_run_directory_still_evaluates_and_plots(fake_backend, tmp_path, capsys):
    out = tmp_path / "old"
    assert main([*BASE, "--output", str(out), "--no-bias"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    info = json.loads((out / "run.json").read_text())
    assert info["task_name"] == "fake-classification" and info["method"]["config"]["train_bias"] is False
    # rewrite run.json as the command wrote it before tasks and the VectorFitConfig dict
    info.pop("task_name")
    info["method"] = {**OLD_METHODS[0], "sigma_parametrization": None, "avf": None}
    (out / "run.json").write_text(json.dumps(info))
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])
    assert main(["plot", str(out), "--output", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "weight_change_spectra.png").is_file()


def test_task_by_name_alias_and_unknown(fake_backend, tmp_path, capsys):
    for i, task in enumerate(("fake-classification", "classification", "auto")):
        assert main([*BASE, "--task", task, "--output", str(tmp_path / f"r{i}"), "--no-plots",
                     "--max-steps", "1"]) == 0
        info = json.loads((tmp_path / f"r{i}" / "run.json").read_text())
        assert info["task_name"] == "fake-classification"
        assert info["args"]["task"] == ("auto" if task == "auto" else "fake-classification")
    capsys.readouterr()
    assert main([*BASE, "--task", "regression", "--output", str(tmp_path / "bad")]) == 2
    assert "unknown task 'regression'" in capsys.readouterr().err


def test_vectorfit_biases_default_to_a_share_of_the_rate(fake_backend, tmp_path):
    out = tmp_path / "tenth"
    assert main([*BASE, "--output", str(out), "--no-plots"]) == 0
    stored = json.loads((out / "run.json").read_text())["args"]
    assert stored["lr"] == 0.05 and stored["lr_bias"] == pytest.approx(0.015) and stored["lr_sigma"] is None
    out = tmp_path / "svft"
    assert main([*BASE, "--output", str(out), "--no-plots", "--method", "svft"]) == 0
    assert json.loads((out / "run.json").read_text())["args"]["lr_bias"] is None
    out = tmp_path / "paper"  # the paper's single rate is one flag away
    assert main([*BASE, "--output", str(out), "--no-plots", "--lr-bias", "0.05"]) == 0
    assert json.loads((out / "run.json").read_text())["args"]["lr_bias"] == 0.05


def test_resuming_a_run_from_before_per_kind_rates_keeps_its_single_rate(fake_backend, tmp_path):
    from vectorfit.commands import _merge_resume
    from vectorfit.cli import build_parser

    out = tmp_path / "old"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"args": {"lr": 0.02, "seed": 3}}))
    parser = build_parser()
    args = parser.parse_args(["train", "--output", str(out), "--resume"])
    _merge_resume(args, parser)
    assert args.lr == 0.02 and args.lr_bias == 0.02 and args.lr_sigma == 0.02 and args.lr_head == 0.02


def test_cache_info_and_clear(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VECTORFIT_CACHE", str(tmp_path))
    monkeypatch.setenv("VECTORFIT_CACHE_MAX_GB", "2")
    from vf_core.svd import DecompositionCache, decompose

    cache = DecompositionCache(tmp_path / "svd")
    cache.put("ab" + "0" * 62, decompose(torch.randn(8, 4)))
    cache.flush()
    assert main(["cache", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entries"] == 1 and info["bytes"] > 0 and info["limit_bytes"] == 2 * 1024**3
    assert main(["cache", "clear"]) == 0
    out = capsys.readouterr().out
    assert "removed 1 entries" in out and "0 entries" in out
    monkeypatch.setenv("VECTORFIT_CACHE_MAX_GB", "lots")
    assert main(["cache", "info"]) == 2
    assert "vectorfit: error: VECTORFIT_CACHE_MAX_GB='lots'" in capsys.readouterr().err


def test_a_run_folder_being_written_is_refused(fake_backend, tmp_path, capsys):
    """A second run into an --output another run is writing gets one line and changes nothing there."""
    import subprocess
    import sys
    import textwrap

    out = tmp_path / "busy"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from vectorfit.rundir import RunLock
        with RunLock({str(out)!r}):
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = sorted(p.name for p in out.iterdir())
        assert main([*BASE, "--output", str(out), "--no-plots"]) == 2
        err = capsys.readouterr().err
        assert "is being written by another run" in err and f"pid {holder.pid}" in err
        assert sorted(p.name for p in out.iterdir()) == before
    finally:
        holder.kill()
        holder.wait()
    assert main([*BASE, "--output", str(out), "--no-plots"]) == 0  # released when its holder ends


def test_resume_with_another_method_is_one_clear_line(fake_backend, tmp_path, capsys):
    out = tmp_path / "vf"
    assert main([*BASE, "--output", str(out), "--no-plots"]) == 0
    (out / "metrics.json").unlink()  # as if interrupted
    before = sorted(p.name for p in out.rglob("*"))
    capsys.readouterr()
    assert main([*BASE, "--output", str(out), "--resume", "--method", "full"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--method 'full' differs from the run's 'vectorfit'" in err
    assert sorted(p.name for p in out.rglob("*")) == before




def test_a_multi_process_launch_writes_from_rank_0_only(fake_backend, tmp_path, capsys, monkeypatch):
    """Under torchrun / accelerate launch (RANK, WORLD_SIZE) a task without multiprocess support is refused with one
    line; one that has it runs on every rank, and the ranks but 0 take no lock and write nothing."""
    import dataclasses

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    out = tmp_path / "vf"
    capsys.readouterr()
    assert main([*BASE, "--output", str(out), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trains in one process" in err and not out.exists()

    monkeypatch.setitem(globals(), "FAKE_TASK", dataclasses.replace(FAKE_TASK, multiprocess=True))  # FakePlugin's
    assert main([*BASE, "--output", str(out), "--no-plots"]) == 0
    assert capsys.readouterr().out == ""  # rank 1 prints no summary
    assert sorted(p.name for p in out.iterdir()) == []  # no lock, no run.json, no adapter, no metrics
    monkeypatch.setenv("RANK", "0")
    assert main([*BASE, "--output", str(out), "--no-plots"]) == 0
    assert {"run.json", "metrics.json", "adapter"} <= {p.name for p in out.iterdir()}
