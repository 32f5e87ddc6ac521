"""Mixture-of-experts: 3-D expert parameters (transformers 5's ``experts.gate_up_proj`` / ``down_proj``) and experts
held as separate linears, decomposed per expert (:mod:`vf_core.experts`, :class:`vf_core.layers.DecomposedExperts`).

The hand-built modules below need no model library; the tiny Mixtral, Qwen3-MoE and gpt-oss (transposed,
interleaved gate/up, biases) are built from configs when transformers is installed.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from vf_core import Family, TargetError, VectorFitConfig, VectorFitModel, get_vectorfit_model
from vf_core.experts import ExpertParam, expert_count, expert_index, find_expert_params, guess_expert_role
from vf_core.layers import DecomposedExperts
from vf_core.plugins import get_plugin_manager, hookimpl, reset_plugin_manager

E, D, INTER = 4, 16, 24


# ------------------------------------------------------------------------------------------------ tiny modules
class Experts3D(nn.Module):
    """Experts in 3-D parameters, used like transformers' (``F.linear(x, W[e])``, or ``x @ W[e]`` transposed)."""

    def __init__(self, transposed: bool = False, interleaved: bool = False, bias: bool = False) -> None:
        super().__init__()
        if transposed or interleaved:  # as transformers' use_experts_implementation says
            self.is_transposed, self.is_concatenated = transposed, not interleaved
        gate_up, down = (E, 2 * INTER, D), (E, D, INTER)
        if transposed:
            gate_up, down = (E, D, 2 * INTER), (E, INTER, D)
        self.gate_up_proj = nn.Parameter(torch.randn(gate_up) / D ** 0.5)
        self.down_proj = nn.Parameter(torch.randn(down) / INTER ** 0.5)
        if bias:
            self.gate_up_proj_bias = nn.Parameter(torch.randn(E, 2 * INTER) * 0.1)
            self.down_proj_bias = nn.Parameter(torch.randn(E, D) * 0.1)
        self.transposed, self.interleaved, self.bias = transposed, interleaved, bias

    def _linear(self, x, w, b):
        y = x @ w if self.transposed else x @ w.mT
        return y if b is None else y + b

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for e in range(self.gate_up_proj.shape[0]):  # every read goes through the attribute, as in the eager loop
            h = self._linear(x, self.gate_up_proj[e], self.gate_up_proj_bias[e] if self.bias else None)
            gate, up = (h[..., ::2], h[..., 1::2]) if self.interleaved else h.chunk(2, -1)
            h = self._linear(torch.nn.functional.silu(gate) * up, self.down_proj[e],
                             self.down_proj_bias[e] if self.bias else None)
            out = out + weights[..., e:e + 1] * h
        return out


class LinearExpert(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1, self.w3, self.w2 = nn.Linear(D, INTER), nn.Linear(D, INTER), nn.Linear(INTER, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(torch.nn.functional.silu(self.w1(x)) * self.w3(x))


class LinearExperts(nn.ModuleList):
    """Older Mixtral style: ``experts.<i>.w1 / w2 / w3`` as separate linears."""

    def __init__(self) -> None:
        super().__init__(LinearExpert() for _ in range(E))

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(weights[..., e:e + 1] * expert(x) for e, expert in enumerate(self))


class MoEBlock(nn.Module):
    def __init__(self, experts: nn.Module) -> None:
        super().__init__()
        self.attn = nn.Linear(D, D)
        self.mlp = nn.Module()
        self.mlp.gate = nn.Linear(D, E, bias=False)  # the router
        self.mlp.experts = experts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp.experts(x, torch.softmax(self.mlp.gate(x), -1))


class TinyMoE(nn.Module):
    def __init__(self, make_experts=Experts3D, blocks: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MoEBlock(make_experts()) for _ in range(blocks))
        self.head = nn.Linear(D, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def tiny(make_experts=Experts3D) -> TinyMoE:
    torch.manual_seed(0)
    return TinyMoE(make_experts)


X = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(1))
EXPERT_TARGETS = {"f1": ["gate_up_proj"], "f2": ["down_proj"]}


def perturb(vf: VectorFitModel, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for vec in vf.vectors:
            noise = torch.randn(vec.parameter.shape, generator=gen).to(vec.parameter)
            vec.parameter.add_(0.1 * noise * (vec.parameter.abs() if vec.kind == "sigma" else 1))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach() - b.detach()).abs().max())


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b|`` relative to ``max |b|`` (the hand-built nets' outputs reach about 10)."""
    return max_diff(a, b) / float(b.detach().abs().max())


# ------------------------------------------------------------------------------------------------ recognition
def test_find_expert_params_and_roles():
    model = tiny()
    model.config = type("Config", (), {"num_local_experts": E})()
    assert expert_count(model) == E
    found = find_expert_params(model)
    assert found == {f"layers.{i}.mlp.experts.{n}": r for i in range(2)
                     for n, r in (("gate_up_proj", "f1"), ("down_proj", "f2"))}
    assert "layers.0.mlp.gate.weight" not in find_expert_params(model, num_experts=None)  # routers are 2-D
    assert [guess_expert_role(n) for n in ("mlp.experts.up_proj", "input_linear.weight", "experts.w2", "x.norm")] \
        == ["f1", "f1", "f2", None]
    assert [expert_index(n) for n in ("mlp.experts.3.w1", "mlp.experts.expert_12.wi", "mlp.gate")] == [3, 12, None]


def test_expert_param_layouts():
    plain, gpt_oss = Experts3D(), Experts3D(transposed=True, interleaved=True, bias=True)
    lay = ExpertParam("f1").resolve(plain, "gate_up_proj", "gate_up_proj")
    assert (lay.experts, lay.d_out, lay.d_in, lay.transposed, lay.halves, lay.interleaved, lay.bias) == \
        (E, 2 * INTER, D, False, ("gate", "up"), False, None)
    lay = ExpertParam("f1").resolve(gpt_oss, "gate_up_proj", "gate_up_proj")
    assert (lay.d_out, lay.d_in, lay.transposed, lay.interleaved, lay.bias) == \
        (2 * INTER, D, True, True, "gate_up_proj_bias")
    lay = ExpertParam("f2").resolve(gpt_oss, "down_proj", "down_proj")
    assert (lay.d_out, lay.d_in, lay.halves, lay.bias) == (D, INTER, (), "down_proj_bias")
    # no is_transposed attribute (Llama 4): read from the shape against the hidden size
    llama4 = Experts3D(transposed=True)
    del llama4.is_transposed, llama4.is_concatenated
    assert ExpertParam("f1").resolve(llama4, "gate_up_proj", "g", hidden_size=D).transposed
    assert ExpertParam("f2").resolve(llama4, "down_proj", "d", hidden_size=D).transposed
    assert not ExpertParam("f2").resolve(plain, "down_proj", "d", hidden_size=D).transposed
    with pytest.raises(TargetError, match="do not split"):
        ExpertParam("f1", halves=("a", "b", "c", "d", "e")).resolve(plain, "gate_up_proj", "g")
    with pytest.raises(TargetError, match="not a 3-D expert parameter"):
        ExpertParam("f1").resolve(nn.Linear(2, 2), "weight", "lin.weight")
    with pytest.raises(ValueError, match="unknown role"):
        ExpertParam("mlp")


# ------------------------------------------------------------------------------------------------ 3-D parameters
@pytest.mark.parametrize("kind", ["plain", "transposed-interleaved-bias"])
def test_exact_trainable_saved_merged(kind, tmp_path):
    make = Experts3D if kind == "plain" else (lambda: Experts3D(transposed=True, interleaved=True, bias=True))
    model, fresh = tiny(make), tiny(make)
    routers = {n: p.detach().clone() for n, p in model.named_parameters() if ".gate." in n}
    names = [n for n, _ in model.named_parameters()]
    reference = model(X).detach()
    vf = get_vectorfit_model(model, VectorFitConfig(target_modules=EXPERT_TARGETS))
    # every expert's matrix on its own; gate_up split in halves, both f1; names carry the expert index
    halves = ("gate", "up")
    expected = [f"layers.{i}.mlp.experts.gate_up_proj[{e}].{h}.{k}" for i in range(2) for e in range(E)
                for h in halves for k in ("sigma",) + (("bias",) if kind != "plain" else ())]
    assert [n for n in vf.vectors.names() if "gate_up" in n] == expected
    assert {(v.role, v.layer) for v in vf.vectors if "down_proj" in v.name} == {("f2", 0), ("f2", 1)}
    assert [v.expert for v in vf.vectors.select(layer=1, role="f2", kind="sigma")] == list(range(E))
    assert vf.vectors["layers.0.mlp.experts.gate_up_proj[3].up.sigma"].numel == min(INTER, D)
    # exact at initialisation, with and without gradients
    with torch.no_grad():
        assert rel_diff(vf(X), reference) < 1e-5
    out = vf(X)
    assert rel_diff(out, reference) < 1e-5
    # gradients reach each expert's vectors; nothing else trains (routers included)
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
    for vec in vf.vectors:
        assert vec.parameter.grad is not None and vec.parameter.grad.abs().sum() > 0, vec.name
    trainable = {id(v.parameter) for v in vf.vectors}
    assert all(id(p) in trainable for p in vf.parameters() if p.requires_grad)
    for n, p in vf.get_base_model().named_parameters():
        if ".gate." in n:
            assert not p.requires_grad and torch.equal(p, routers[n]), n
    # the original 3-D tensors are gone (not kept as frozen copies)
    experts = vf.get_base_model().layers[0].mlp.experts
    assert parametrize.is_parametrized(experts, "gate_up_proj") and "gate_up_proj" not in experts._parameters
    # save: only the trained vectors
    perturb(vf)
    with torch.no_grad():
        adapted = vf(X)
    vf.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert sorted(saved) == sorted(f"vector::{n}" for n in vf.vectors.names())
    assert sum(t.numel() for t in saved.values()) == vf.trainable_parameter_counts()["total"]
    # load round trip
    loaded = VectorFitModel.from_pretrained(copy.deepcopy(fresh), tmp_path)
    assert loaded.vectors.names() == vf.vectors.names()
    with torch.no_grad():
        assert rel_diff(loaded(X), adapted) == 0
    # merge: a plain model, the same parameter names in the same order, the adapted function, routers untouched
    merged = vf.merge_and_unload()
    experts = merged.layers[0].mlp.experts
    assert type(experts) is Experts3D and not parametrize.is_parametrized(experts)
    assert isinstance(experts.gate_up_proj, nn.Parameter)
    assert experts.gate_up_proj.shape == fresh.layers[0].mlp.experts.gate_up_proj.shape
    assert [n for n, _ in merged.named_parameters()] == names
    assert not any(isinstance(m, DecomposedExperts) for m in merged.modules())
    assert not experts._forward_hooks and not experts._forward_pre_hooks
    with torch.no_grad():
        assert rel_diff(merged(X), adapted) < 1e-5
    for n, p in merged.named_parameters():
        if ".gate." in n:
            assert torch.equal(p, routers[n]), n


def test_whole_matrix_option_and_methods(tmp_path):
    """``halves=()`` decomposes each expert's whole matrix; svfit, svft and relative sigmas work per expert too."""
    fam = Family(name="tiny-moe-test", backend="test", block_pattern=r"layers\.\d+", class_names=("TinyMoE",),
                 roles={"o": ("attn",)},
                 expert_params={"mlp.experts.gate_up_proj": ExpertParam("f1", halves=()),
                                "mlp.experts.down_proj": "f2"})
    with _families(fam):
        reference = tiny()(X).detach()
        vf = get_vectorfit_model(tiny(), VectorFitConfig())
        assert vf.family.name == "tiny-moe-test" and fam.declared_roles == ("o", "f1", "f2")
        assert "layers.1.mlp.experts.gate_up_proj[2].sigma" in vf.vectors
        assert vf.vectors["layers.1.mlp.experts.gate_up_proj[2].sigma"].numel == D
        assert rel_diff(vf(X), reference) < 1e-5
        for options in (dict(method="svfit", rank=4), dict(method="svft", pattern="random", off_diagonals=1),
                        dict(sigma_parametrization="relative", roles=["f2"])):
            vf = get_vectorfit_model(tiny(), VectorFitConfig(**options))
            assert rel_diff(vf(X), reference) < 1e-5, options
            perturb(vf)
            with torch.no_grad():
                adapted = vf(X)
            vf.save_pretrained(tmp_path / options.get("method", "relative"))
            loaded = VectorFitModel.from_pretrained(tiny(), tmp_path / options.get("method", "relative"))
            with torch.no_grad():
                assert rel_diff(loaded(X), adapted) < 1e-5, options
            if "roles" in options:
                assert {v.role for v in vf.vectors} == {"f2"}


def test_named_experts_module_and_regex():
    by_module = get_vectorfit_model(tiny(), VectorFitConfig(target_modules=["experts"]))
    by_regex = get_vectorfit_model(tiny(), VectorFitConfig(target_modules=r".*experts\.(gate_up|down)_proj"))
    assert by_module.vectors.names() == by_regex.vectors.names()
    assert len(by_module.vectors) == 2 * E * 3  # blocks x experts x (gate, up, down); no biases to train
    assert all(v.role is None for v in by_module.vectors)  # a list names no role


def test_rebuilt_once_per_forward(monkeypatch):
    """Every read within one forward of the experts module shares one rebuilt tensor; in eval mode without
    gradients it is cached until a vector changes."""
    calls = []
    rebuild = DecomposedExperts._rebuild
    monkeypatch.setattr(DecomposedExperts, "_rebuild", lambda self, what: calls.append(what) or rebuild(self, what))
    vf = get_vectorfit_model(tiny(), VectorFitConfig(target_modules=EXPERT_TARGETS))
    calls.clear()
    vf(X).sum().backward()  # the forward reads each parameter E times
    assert len(calls) == 4  # 2 blocks x 2 parameters
    calls.clear()
    with torch.no_grad():  # training mode: no dense copy kept between forwards
        vf(X), vf(X)
    assert len(calls) == 8
    calls.clear()
    vf.eval()
    with torch.no_grad():
        vf(X), vf(X)
    assert len(calls) == 4
    with torch.no_grad():
        vf.vectors["layers.0.mlp.experts.down_proj[1].sigma"].parameter.mul_(1.1)
        vf(X)
    assert len(calls) == 5


def test_frozen_vector_and_disable_adapter():
    model = tiny()
    reference = model(X).detach()
    vf = get_vectorfit_model(model, VectorFitConfig(target_modules=EXPERT_TARGETS))
    perturb(vf)
    frozen = vf.vectors["layers.0.mlp.experts.down_proj[2].sigma"]
    frozen.parameter.requires_grad_(False)  # what AVF does
    vf(X).sum().backward()
    assert frozen.parameter.grad is None
    assert vf.vectors["layers.0.mlp.experts.down_proj[1].sigma"].parameter.grad is not None
    with vf.disable_adapter(), torch.no_grad():
        assert rel_diff(vf(X), reference) < 1e-5
    base = vf.unload()  # the weights before training, plain again
    with torch.no_grad():
        assert rel_diff(base(X), reference) < 1e-5


def test_assignment_refused_deepcopy_and_atomic():
    vf = get_vectorfit_model(tiny(), VectorFitConfig(target_modules=EXPERT_TARGETS))
    experts = vf.get_base_model().layers[0].mlp.experts
    with pytest.raises(RuntimeError, match="merge_and_unload"):
        experts.gate_up_proj = torch.zeros(E, 2 * INTER, D)
    perturb(vf)
    with torch.no_grad():
        adapted = vf(X)
    twin = copy.deepcopy(vf)
    merged = twin.merge_and_unload()
    with torch.no_grad():
        assert rel_diff(merged(X), adapted) < 1e-5
        assert rel_diff(vf(X), adapted) == 0  # the original still decomposed, its hooks intact
    assert parametrize.is_parametrized(vf.get_base_model().layers[0].mlp.experts)
    # a failure while swapping in leaves the model as it was
    model = tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cls = type(model.layers[1].mlp.experts)
    from vf_core import injection

    real = injection._swap_one
    seen = []

    def failing(m, name, new, *aliases):
        seen.append(name)
        if len(seen) == 3:
            raise RuntimeError("boom")
        return real(m, name, new, *aliases)

    try:
        injection._swap_one = failing
        with pytest.raises(RuntimeError, match="boom"):
            get_vectorfit_model(model, VectorFitConfig(target_modules=EXPERT_TARGETS))
    finally:
        injection._swap_one = real
    assert [n for n, _ in model.named_parameters()] == list(before)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert type(model.layers[0].mlp.experts) is cls and not model.layers[0].mlp.experts._forward_pre_hooks


def test_half_precision():
    model = tiny().to(torch.bfloat16)
    vf = get_vectorfit_model(model, VectorFitConfig(target_modules=EXPERT_TARGETS))
    out = vf(X.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and vf.get_base_model().layers[0].mlp.experts.down_proj.dtype == torch.bfloat16
    out.float().sum().backward()
    merged = vf.merge_and_unload()
    assert merged.layers[0].mlp.experts.down_proj.dtype == torch.bfloat16


# ------------------------------------------------------------------------------------------------ separate linears
def test_separate_linear_experts():
    model, fresh = tiny(LinearExperts), tiny(LinearExperts)
    reference = model(X).detach()
    vf = get_vectorfit_model(model, VectorFitConfig(target_modules={"f1": ["w1", "w3"], "f2": ["w2"]}))
    assert len(vf.vectors) == 2 * E * 3 * 2
    for vec in vf.vectors:
        m = re.fullmatch(r"layers\.(\d)\.mlp\.experts\.(\d)\.(w\d)\.(sigma|bias)", vec.name)
        assert m, vec.name
        assert vec.expert == int(m.group(2)) and vec.layer == int(m.group(1))
        assert vec.role == ("f2" if m.group(3) == "w2" else "f1")
    assert rel_diff(vf(X), reference) < 1e-5
    vf(X).sum().backward()
    assert all(v.parameter.grad is not None for v in vf.vectors)
    perturb(vf)
    with torch.no_grad():
        adapted = vf(X)
    merged = vf.merge_and_unload()
    assert [n for n, _ in merged.named_parameters()] == [n for n, _ in fresh.named_parameters()]
    with torch.no_grad():
        assert rel_diff(merged(X), adapted) < 1e-5


# ------------------------------------------------------------------------------------------------ transformers
class _Families:
    def __init__(self, *families: Family) -> None:
        self.families = families

    @hookimpl
    def vectorfit_families(self):
        return list(self.families)

    @hookimpl
    def vectorfit_identify_family(self, model, families):
        return next((f.name for f in self.families if f.identifies(model)), None)


class _families:
    """Register a throwaway plugin declaring ``families`` (identified before any backend's)."""

    def __init__(self, *families: Family) -> None:
        self.plugin = _Families(*families)

    def __enter__(self):
        reset_plugin_manager()
        get_plugin_manager().register(self.plugin, name="test-experts-families")
        return self

    def __exit__(self, *exc):
        get_plugin_manager().unregister(self.plugin)
        reset_plugin_manager()


def _hf(config_name: str, model_name: str, **kwargs):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = getattr(transformers, config_name)(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                num_key_value_heads=2, vocab_size=99, max_position_embeddings=64,
                                                **kwargs)
    return getattr(transformers, model_name)(config).eval()


def mixtral(**kwargs):
    return _hf("MixtralConfig", "MixtralForCausalLM", intermediate_size=48, num_local_experts=4,
               num_experts_per_tok=kwargs.pop("top_k", 2), **kwargs)


def qwen3_moe():
    return _hf("Qwen3MoeConfig", "Qwen3MoeForCausalLM", intermediate_size=64, moe_intermediate_size=24, num_experts=4,
               num_experts_per_tok=2, head_dim=8)


IDS = torch.randint(3, 99, (2, 7), generator=torch.Generator().manual_seed(0))


def logits(model) -> torch.Tensor:
    return model(input_ids=IDS).logits


def _check_adapter(build, vf: VectorFitModel, tmp_path) -> None:
    """Save / load round trip and merge of an injected transformers model."""
    perturb(vf)
    with torch.no_grad():
        adapted = logits(vf)
    vf.save_pretrained(tmp_path)
    loaded = VectorFitModel.from_pretrained(build(), tmp_path)
    with torch.no_grad():
        assert max_diff(logits(loaded), adapted) == 0
    names = [n for n, _ in build().named_parameters()]
    merged = vf.merge_and_unload()
    assert [n for n, _ in merged.named_parameters()] == names
    assert not any(parametrize.is_parametrized(m) for m in merged.modules())
    with torch.no_grad():
        assert max_diff(logits(merged), adapted) < 1e-4 * adapted.abs().max()


@pytest.mark.parametrize("implementation", ["grouped_mm", "eager"])
def test_mixtral(implementation, tmp_path):
    def build():
        model = mixtral(top_k=4)  # every token reaches every expert: each expert's s gets a gradient
        model.config._experts_implementation = implementation
        return model

    model = build()
    routers = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("mlp.gate.weight")}
    assert len(routers) == 2
    reference = logits(model).detach()
    vf = get_vectorfit_model(model, VectorFitConfig(target_modules={"q": ["q_proj"], "v": ["v_proj"],
                                                                    "f1": ["gate_up_proj"], "f2": ["down_proj"]}))
    assert len(vf.vectors.select(role="f1", layer=1)) == 4 * 2  # experts x (gate, up); Mixtral has no biases
    assert vf.vectors.select(role="f2", layer=0)[3].name == "model.layers.0.mlp.experts.down_proj[3].sigma"
    with torch.no_grad():
        assert max_diff(logits(vf), reference) < 1e-5
    out = logits(vf)
    assert max_diff(out, reference) < 1e-5
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(3))).sum().backward()
    for vec in vf.vectors:
        assert vec.parameter.grad is not None and vec.parameter.grad.abs().sum() > 0, vec.name
    for n, p in vf.get_base_model().named_parameters():
        if n in routers:
            assert not p.requires_grad and torch.equal(p, routers[n])
    _check_adapter(build, vf, tmp_path)


def test_qwen3_moe_declared_family(tmp_path):
    """A family names the expert parameters relative to its blocks; the default config targets them."""
    model = qwen3_moe()
    found = find_expert_params(model)
    assert found == {f"model.layers.{i}.mlp.experts.{n}": r for i in range(2)
                     for n, r in (("gate_up_proj", "f1"), ("down_proj", "f2"))}
    fam = Family(name="qwen3-moe-test", backend="test", model_types=("qwen3_moe",),
                 block_pattern=r"(?:.*\.)?layers\.\d+",
                 roles={"q": ("self_attn.q_proj",), "k": ("self_attn.k_proj",), "v": ("self_attn.v_proj",),
                        "o": ("self_attn.o_proj",)},
                 expert_params={"mlp.experts.gate_up_proj": "f1", "mlp.experts.down_proj": "f2"})
    with _families(fam):
        reference = logits(model).detach()
        vf = get_vectorfit_model(model, VectorFitConfig(train_bias=False))
        assert vf.family.name == "qwen3-moe-test"
        roles = {(v.layer, v.role) for v in vf.vectors}
        assert roles == {(i, r) for i in range(2) for r in ("q", "k", "v", "o", "f1", "f2")}
        assert len(vf.vectors.select(kind="sigma", role="f1", layer=0)) == 4 * 2
        with torch.no_grad():
            assert max_diff(logits(vf), reference) < 1e-5
        out = logits(vf)
        assert max_diff(out, reference) < 1e-5
        out.sum().backward()
        hit = [v for v in vf.vectors if v.parameter.grad is not None and v.parameter.grad.abs().sum() > 0]
        assert {v.expert for v in hit if v.expert is not None} == set(range(4))
        assert not vf.get_base_model().model.layers[0].mlp.gate.weight.requires_grad
        _check_adapter(qwen3_moe, vf, tmp_path)


def test_gpt_oss_transposed_interleaved_biases(tmp_path):
    def build():
        transformers = pytest.importorskip("transformers")
        torch.manual_seed(0)
        config = transformers.GptOssConfig(hidden_size=32, intermediate_size=24, num_hidden_layers=2,
                                           num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                           num_local_experts=4, num_experts_per_tok=4, vocab_size=99,
                                           max_position_embeddings=64, layer_types=["full_attention"] * 2,
                                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
        model = transformers.GptOssForCausalLM(config).eval()
        with torch.no_grad():  # transformers initialises these biases at zero
            for n, p in model.named_parameters():
                if n.endswith("_proj_bias"):
                    p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(n)))
        return model

    model = build()
    reference = logits(model).detach()
    vf = get_vectorfit_model(model, VectorFitConfig(target_modules=["gate_up_proj", "down_proj"]))
    layer = vf.decomposed_layers()["model.layers.0.mlp.experts.gate_up_proj"]
    assert layer.layout.transposed and layer.layout.interleaved and layer.layout.bias == "gate_up_proj_bias"
    assert vf.vectors["model.layers.1.mlp.experts.gate_up_proj[2].up.bias"].numel == 24
    assert vf.vectors["model.layers.1.mlp.experts.down_proj[2].bias"].numel == 32
    with torch.no_grad():
        assert max_diff(logits(vf), reference) < 1e-5
    out = logits(vf)
    assert max_diff(out, reference) < 1e-5
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(3))).sum().backward()
    for vec in vf.vectors:
        assert vec.parameter.grad is not None and vec.parameter.grad.abs().sum() > 0, vec.name
    _check_adapter(build, vf, tmp_path)


def test_an_inferred_family_decomposes_3d_experts_with_no_names_given():
    """Mixtral has no declared family: the roles are inferred, and its 3-D experts join them (per expert)."""
    transformers = pytest.importorskip("transformers")
    from vf_core import VectorFitConfig, get_vectorfit_model

    cfg = transformers.AutoConfig.for_model(
        "mixtral", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, vocab_size=100)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    x = torch.randint(0, 100, (2, 7))
    reference = model(x).logits
    vf = get_vectorfit_model(model, VectorFitConfig())
    assert vf.family.origin == "inferred"
    assert dict(vf.family.expert_params) == {"mlp.experts.gate_up_proj": "f1", "mlp.experts.down_proj": "f2"}
    torch.testing.assert_close(vf(x).logits, reference, atol=1e-5, rtol=0)
    vf(x).logits.sum().backward()
    experts = [v for v in vf.vectors if v.expert is not None]
    assert {v.expert for v in experts} == {0, 1, 2, 3}
    assert all(v.parameter.grad is not None for v in experts if v.kind == "sigma")
