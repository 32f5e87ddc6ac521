"""The tiny models of the coverage sweep: every architecture of transformers' auto mappings, one model per timm
module, every diffusers denoiser, each built from a small configuration offline, with an input for it.

A :class:`Case` names one model; ``case.build()`` returns ``(model, args, kwargs)`` or raises :class:`Skip` with the
reason it cannot be built (a missing optional dependency, a configuration that needs weights or remote code...).

- transformers: each ``model_type`` once, with the head of the first mapping that has it among seq2seq LM, masked LM,
  causal LM, sequence classification and image classification. Its default configuration is shrunk by
  :func:`shrink` (hidden 64, 2 layers, 4 heads, 2 key-value heads, intermediate 128, vocabulary 128, 4 experts...:
  every size field that is present, in sub-configurations too) plus the per-model fixes in ``_TRANSFORMERS_FIXES``;
  where that does not build or run, milder shrinks, then the default configuration when it is small.
- timm: each module of ``timm.list_modules()`` once, by its smallest model (timm's ``test_*`` models first, else the
  smallest parameter count among the names that look smallest), ``pretrained=False``, at a small ``img_size`` where
  the model accepts one.
- diffusers: every class exported from ``diffusers.models.transformers`` and ``diffusers.models.unets``, built from
  diffusers' own test configuration (``diffusers_tiny.json``, extracted by ``extract_diffusers.py``) or from
  ``_DIFFUSERS_CONFIGS`` here.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import io
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

import torch

HERE = Path(__file__).parent

#: a model above this many parameters is not built (the default configuration of a large model)
MAX_PARAMS = 60_000_000


class Skip(Exception):
    """The model cannot be built or run here; the message says why."""


@dataclass
class Case:
    library: str  # "transformers", "timm", "diffusers"
    name: str  # model_type, timm module, diffusers class (with its variant)
    kind: str  # "text", "vision", "denoiser"
    detail: str = ""  # the class or model name built
    build: Callable[[], tuple] = field(default=lambda: (None, (), {}), repr=False)

    @property
    def key(self) -> str:
        return f"{self.library}:{self.name}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


@contextlib.contextmanager
def quiet():
    """Silence the libraries' warnings and prints while building and running a model."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def count_on_meta(factory: Callable[[], torch.nn.Module]) -> Optional[int]:
    """The number of parameters of the model ``factory`` builds, built on the meta device (None if it cannot be)."""
    try:
        with torch.device("meta"), quiet():
            model = factory()
        return sum(p.numel() for p in model.parameters())
    except Exception:
        return None


# ================================================================================================ transformers
_HEAD_MAPPINGS = (
    ("seq2seq", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
    ("masked_lm", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
    ("causal_lm", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
    ("seq_cls", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    ("image_cls", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
)

HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, INTER, VOCAB, EXPERTS = 64, 2, 4, 2, 16, 128, 128, 4
_HIDDEN_KEYS = {"hidden_size", "d_model", "n_embd", "n_embed", "embed_dim", "dim", "model_dim", "hidden_dim",
                "embedding_size", "word_embed_proj_dim", "embedding_dim", "d_embed", "emb_dim", "hidden_dims"}
_LAYER_KEYS = {"num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers", "decoder_layers",
               "num_decoder_layers", "num_encoder_layers", "depth", "n_layers_encoder", "n_layers_decoder",
               "num_local_blocks"}
_HEAD_KEYS = {"num_attention_heads", "n_head", "n_heads", "num_heads", "encoder_attention_heads",
              "decoder_attention_heads", "attention_heads", "num_attention_heads_decoder"}
_KV_KEYS = {"num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num", "kv_n_heads",
            "n_kv_heads", "num_kv"}
_HEAD_DIM_KEYS = {"head_dim", "kv_channels", "d_kv", "head_size", "attention_head_size", "dim_head", "d_head",
                  "qk_nope_head_dim", "v_head_dim", "qk_rope_head_dim"}
_INTER_KEYS = {"intermediate_size", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim", "d_ff", "n_inner",
               "ffn_hidden_size", "intermediate_dim", "moe_intermediate_size", "shared_expert_intermediate_size",
               "d_inner", "mlp_dim", "feed_forward_size", "inner_hidden_size", "filter_size",
               "dense_intermediate_size", "expert_intermediate_size", "mlp_hidden_size", "ff_dim"}
_EXPERT_KEYS = {"num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "num_routed_experts"}
_TOPK_KEYS = {"num_experts_per_tok", "moe_topk", "top_k", "num_selected_experts", "moe_k", "experts_per_token"}
_RANK_KEYS = {"kv_lora_rank", "q_lora_rank"}
_POSITION_KEYS = {"max_position_embeddings", "n_positions", "max_seq_len", "max_sequence_length", "n_ctx",
                  "seq_length", "max_seq_length"}
_TOKEN_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "sep_token_id",
               "cls_token_id", "mask_token_id", "unk_token_id", "forced_eos_token_id", "forced_bos_token_id")
_NOT_CONFIGS = {"rope_scaling", "rope_parameters", "quantization_config", "id2label", "label2id",
                "task_specific_params", "torch_dtype", "dtype"}

# per-model fixes, on top of the shrink (what a shrunk configuration needs to build or run)
_TRANSFORMERS_FIXES: dict[str, dict[str, Any]] = {
    "big_bird": {"attention_type": "original_full"},
    "bigbird_pegasus": {"attention_type": "original_full"},
    "reformer": {"axial_pos_shape": [4, 8], "axial_pos_embds_dim": [32, 32], "local_attn_chunk_length": 4,
                 "lsh_attn_chunk_length": 4, "attn_layers": ["local", "lsh"], "num_buckets": 2},
    "longformer": {"attention_window": 4},
    "led": {"attention_window": 4},
    "funnel": {"block_sizes": [1, 1], "num_decoder_layers": 1},
    "xlnet": {"d_head": 16},
    "transfo-xl": {"cutoffs": [], "div_val": 1},
    "codegen": {"rotary_dim": 8},
    "gptj": {"rotary_dim": 8},
    "gpt_neox_japanese": {"intermediate_multiple_size": 2},
    # hybrids: one attention layer among the two (the defaults put the first attention layer further down)
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1},
    "bamba": {"attn_layer_indices": [1]},
    "granitemoehybrid": {"layer_types": ["mamba", "attention"]},
    "mamba2": {"head_dim": 32, "n_groups": 1},
    "deepseek_v2": {"num_experts_per_tok": 2, "topk_method": "greedy"},
}


def _is_config(value: Any) -> bool:
    return hasattr(value, "to_dict") and hasattr(value, "model_type")


def shrink(config, level: int = 0) -> dict[str, Any]:
    """Keyword arguments that shrink ``config`` (a default transformers configuration) to a tiny model.

    Level 0 sets every size field that is present; level 1 leaves head dimensions and low ranks alone (some
    configurations derive them); level 2 only cuts layers, vocabulary and experts."""
    defaults = config.to_dict()
    out: dict[str, Any] = {}
    layers_before = next((v for k, v in defaults.items() if k in _LAYER_KEYS and isinstance(v, int) and v > 0), None)
    for key, value in defaults.items():
        if key in _NOT_CONFIGS:
            continue
        try:
            sub = getattr(config, key, None)
        except Exception:  # a per-layer attribute of a heterogeneous configuration (Gemma 4)
            sub = None
        if _is_config(sub):
            out[key] = {**sub.to_dict(), **shrink(sub, level)}
            out[key].pop("transformers_version", None)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, list)):
            continue
        if key in _LAYER_KEYS and isinstance(value, int):
            out[key] = min(value, LAYERS) if value > 0 else value
        elif key in _INTER_KEYS and isinstance(value, list) and level < 2:
            out[key] = [INTER] * min(len(value), LAYERS)  # one per layer (Gemma 3n)
        elif key == "vocab_size" and isinstance(value, int):
            out[key] = min(value, VOCAB)
        elif key in _EXPERT_KEYS and isinstance(value, int) and value > 1:
            out[key] = min(value, EXPERTS)
        elif key in _TOPK_KEYS and isinstance(value, int):
            out[key] = min(value, 2)
        elif key in ("n_group", "topk_group", "num_expert_group", "topk_groups") and isinstance(value, int):
            out[key] = 1
        elif level >= 2:
            continue
        elif key in _HIDDEN_KEYS and isinstance(value, int) and value > 0:
            out[key] = HIDDEN
        elif key in _HEAD_KEYS and isinstance(value, int) and value > 0:
            out[key] = HEADS
        elif key in _KV_KEYS and isinstance(value, int) and value > 0:
            heads = next((defaults[k] for k in _HEAD_KEYS if isinstance(defaults.get(k), int)), None)
            out[key] = 1 if value == 1 else HEADS if value == heads else KV_HEADS
        elif key in _INTER_KEYS and isinstance(value, int) and value > 0:
            out[key] = INTER
        elif key in _POSITION_KEYS and isinstance(value, int) and value > 512:
            out[key] = 512
        elif level >= 1:
            continue
        elif key in _HEAD_DIM_KEYS and isinstance(value, int) and value > 0:
            out[key] = HEAD_DIM if key not in ("qk_rope_head_dim",) else HEAD_DIM // 2
        elif key in _RANK_KEYS and isinstance(value, int) and value > 0:
            out[key] = 16
    if isinstance(defaults.get("per_layer_config"), dict) and defaults["per_layer_config"]:
        out["per_layer_config"] = {}  # per-layer overrides name layers the shrunk model no longer has
    for key in ("vocab_size_per_layer_input", "hidden_size_per_layer_input"):
        if isinstance(defaults.get(key), int) and defaults[key] > 0:
            out[key] = VOCAB if key.startswith("vocab") else 16
    layers = next((out[k] for k in _LAYER_KEYS if k in out), None)
    for key, value in defaults.items():  # per-layer lists follow the number of layers, keeping two kinds
        if key in out or key in _NOT_CONFIGS:
            continue
        if isinstance(value, list) and layers_before and len(value) == layers_before and layers:
            other = [v for v in value if v != value[0]]
            out[key] = (value[:1] + other[:1] + value[1:])[:layers] if other and layers >= 2 else value[:layers]
    vocab = out.get("vocab_size", defaults.get("vocab_size"))
    if isinstance(vocab, int):
        for i, key in enumerate(_TOKEN_KEYS):
            value = defaults.get(key)
            if isinstance(value, int) and value >= vocab:
                out[key] = min(i, vocab - 1)
            elif isinstance(value, list) and any(isinstance(v, int) and v >= vocab for v in value):
                out[key] = [min(i, vocab - 1)]
    return out


def _class_for(mapping: dict, model_type: str) -> Optional[str]:
    name = mapping.get(model_type)
    if isinstance(name, (tuple, list)):
        name = name[0]
    return name


def transformers_cases() -> list[Case]:
    from transformers.models.auto import modeling_auto

    mappings = {head: getattr(modeling_auto, attr) for head, attr in _HEAD_MAPPINGS}
    types = sorted({t for m in mappings.values() for t in m})
    cases = []
    for model_type in types:
        head = next(h for h, m in mappings.items() if model_type in m)
        cls_name = _class_for(mappings[head], model_type)
        kind = "vision" if head == "image_cls" else "text"
        tuple_entry = isinstance(mappings[head][model_type], (tuple, list))
        cases.append(Case("transformers", model_type, kind, f"{cls_name} ({head})",
                          functools.partial(_build_transformers, model_type, cls_name, head, tuple_entry)))
    return cases


_AUTO_CLASSES = {"seq2seq": "AutoModelForSeq2SeqLM", "masked_lm": "AutoModelForMaskedLM",
                 "causal_lm": "AutoModelForCausalLM", "seq_cls": "AutoModelForSequenceClassification",
                 "image_cls": "AutoModelForImageClassification"}


def _transformers_input(model, config, head: str) -> tuple[tuple, dict]:
    gen = torch.Generator().manual_seed(0)
    if head == "image_cls":
        vision = getattr(config, "vision_config", None) or config
        size = getattr(vision, "image_size", None) or getattr(config, "image_size", None) or 224
        size = size[0] if isinstance(size, (list, tuple)) else size
        channels = getattr(vision, "num_channels", None) or getattr(config, "num_channels", 3)
        return (), {"pixel_values": torch.randn(2, channels, size, size, generator=gen)}
    text = getattr(config, "text_config", None) or config
    vocab = getattr(text, "vocab_size", None) or getattr(config, "vocab_size", None) or VOCAB
    ids = torch.randint(3, max(4, min(vocab, 100)), (2, 8), generator=gen)
    kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if head == "seq2seq":
        kwargs["decoder_input_ids"] = ids[:, :6].clone()
    if "use_cache" in inspect.signature(model.forward).parameters:
        kwargs["use_cache"] = False
    return (), kwargs


def _build_transformers(model_type: str, cls_name: str, head: str, tuple_entry: bool = False):
    import transformers

    if getattr(transformers, cls_name, None) is None:
        raise Skip(f"transformers does not export {cls_name}")
    auto = getattr(transformers, _AUTO_CLASSES[head])
    if tuple_entry:  # several classes for one model type (LeViT, DeiT): the Auto class refuses the config
        auto = SimpleNamespace(from_config=getattr(transformers, cls_name))
    with quiet():
        try:
            default = transformers.AutoConfig.for_model(model_type)
        except Exception as exc:
            raise Skip(f"default configuration: {first_line(exc)}") from None
    fixes = _TRANSFORMERS_FIXES.get(model_type, {})
    attempts = [(f"shrunk (level {level})", {**shrink(default, level), **fixes}) for level in (0, 1, 2)]
    attempts.append(("default configuration", dict(fixes)))
    errors = []
    for label, overrides in attempts:
        try:
            with quiet():
                config = transformers.AutoConfig.for_model(model_type, **overrides)
                if head == "seq_cls" and getattr(config, "pad_token_id", None) is None:
                    config.pad_token_id = 0
                config.num_labels = 3 if head in ("seq_cls", "image_cls") else config.num_labels
            count = count_on_meta(functools.partial(auto.from_config, config))
            if count is not None and count > MAX_PARAMS:
                errors.append(f"{label}: {count / 1e6:.0f}M parameters")
                continue
            torch.manual_seed(0)
            with quiet():
                model = auto.from_config(config).float().eval()
                if hasattr(model, "set_default_language") and getattr(config, "languages", None):
                    model.set_default_language(config.languages[0])  # X-MOD
                args, kwargs = _transformers_input(model, model.config, head)
                with torch.no_grad():
                    model(*args, **kwargs)
            return model, args, kwargs
        except Skip:
            raise
        except Exception as exc:
            errors.append(f"{label}: {first_line(exc)}")
    if any("requires" in e and ("library" in e or "install" in e) for e in errors):
        raise Skip(f"missing optional dependency: {errors[-1]}")
    raise Skip("; ".join(errors[:1] + errors[-1:]) if len(errors) > 1 else errors[0])


# ================================================================================================ timm
_SMALL_WORDS = ["test", "atto", "femto", "pico", "nano", "xxxs", "xxs", "tiny", "xs", "mini", "micro", "t", "lite0",
                "s0", "b0", "small", "s", "xsmall", "18", "10", "12", "14", "26", "34", "50", "base", "b", "m",
                "medium"]


def _size_score(name: str) -> tuple:
    words = re.split(r"[_.\-]", name)
    ranks = [_SMALL_WORDS.index(w) for w in words if w in _SMALL_WORDS]
    return (min(ranks) if ranks else len(_SMALL_WORDS), len(name), name)


def smallest_timm_model(module: str, candidates: int = 4) -> Optional[str]:
    """The smallest model of a timm module: its ``test_*`` model, else the fewest parameters among the names that
    look smallest (counted on the meta device)."""
    import timm

    names = timm.list_models(module=module)
    if not names:
        return None
    tests = [n for n in names if n.startswith("test_")]
    if tests:
        return sorted(tests, key=_size_score)[0]
    ranked = sorted(names, key=_size_score)[:candidates]
    counts = {n: count_on_meta(functools.partial(timm.create_model, n, pretrained=False)) for n in ranked}
    known = {n: c for n, c in counts.items() if c is not None}
    return min(known, key=known.get) if known else ranked[0]


def timm_cases() -> list[Case]:
    import timm

    return [Case("timm", module, "vision", "", functools.partial(_build_timm, module))
            for module in sorted(timm.list_modules())]


def _build_timm(module: str):
    import timm

    name = smallest_timm_model(module)
    if name is None:
        raise Skip("the module registers no model")
    errors = []
    # (create_model keywords, input size): a small image first, with the model told its size where it takes one
    for kwargs, size in (({"img_size": 64, "depth": 2}, 64), ({"img_size": 64}, 64), ({}, 64), ({"img_size": 96}, 96),
                         ({"depth": 2}, None), ({}, None)):
        try:
            count = count_on_meta(functools.partial(timm.create_model, name, pretrained=False, num_classes=10,
                                                    **kwargs))
            if count is not None and count > MAX_PARAMS:
                errors.append(f"{kwargs or 'defaults'}: {count / 1e6:.0f}M parameters")
                continue
            torch.manual_seed(0)
            with quiet():
                model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs).float().eval()
                size = size or model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
                channels = model.pretrained_cfg.get("input_size", (3,))[0]
                x = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))
                with torch.no_grad():
                    model(x)
            model._coverage_name = name  # noqa: SLF001 (read back by the sweep)
            return model, (x,), {}
        except Exception as exc:
            errors.append(f"{kwargs or 'defaults'}: {first_line(exc)}")
    raise Skip(f"{name}: {errors[-1]}")


# ================================================================================================ diffusers
def _decode(value: Any, gen: torch.Generator) -> Any:
    if isinstance(value, dict) and "__tensor__" in value:
        dtype = getattr(torch, value["dtype"])
        if value["__tensor__"] == "randn":
            return torch.randn(*value["shape"], generator=gen).to(dtype)
        return torch.tensor(value["values"], dtype=dtype).reshape(value["shape"])
    if isinstance(value, dict) and "__dict__" in value:
        return {k: _decode(v, gen) for k, v in value["__dict__"].items()}
    if isinstance(value, dict) and "__list__" in value:
        items = [_decode(v, gen) for v in value["__list__"]]
        return tuple(items) if value.get("tuple") else items
    return value


# tiny configurations for denoisers diffusers' tests leave out: class -> (init, inputs as in diffusers_tiny.json)
def _randn(*shape):
    return {"__tensor__": "randn", "shape": list(shape), "dtype": "float32"}


def _values(values, dtype="int64"):
    return {"__tensor__": "values", "shape": [len(values)], "dtype": dtype, "values": list(values)}


_DIFFUSERS_CONFIGS: dict[str, list[tuple[str, dict, dict]]] = {
    "Transformer2DModel": [("continuous", dict(num_attention_heads=2, attention_head_dim=8, in_channels=8,
                                               num_layers=1, norm_num_groups=4, cross_attention_dim=16),
                            {"hidden_states": _randn(2, 8, 4, 4), "encoder_hidden_states": _randn(2, 5, 16),
                             "timestep": _values([10, 500])})],
    "UNet2DConditionModel": [("sd-like", dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                              block_out_channels=[8, 16],
                                              down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                                              up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
                                              cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4),
                              {"sample": _randn(2, 4, 8, 8), "timestep": _values([10, 500]),
                               "encoder_hidden_states": _randn(2, 5, 16)})],
    "UVit2DModel": [("tiny", dict(hidden_size=32, block_out_channels=32, num_res_blocks=1, num_hidden_layers=1,
                                  num_attention_heads=2, in_channels=16, codebook_size=16, vocab_size=17,
                                  encoder_hidden_size=16, cond_embed_dim=16, micro_cond_encode_dim=4,
                                  micro_cond_embed_dim=20, sample_size=4, intermediate_size=64),
                     {"input_ids": {"__tensor__": "values", "shape": [1, 4, 4], "dtype": "int64",
                                    "values": list(range(16))},
                      "encoder_hidden_states": _randn(1, 3, 16), "pooled_text_emb": _randn(1, 16),
                      "micro_conds": _randn(1, 5)})],
    "StableAudioDiTModel": [("tiny", dict(sample_size=8, in_channels=4, num_layers=1, attention_head_dim=8,
                                          num_attention_heads=2, num_key_value_attention_heads=1, out_channels=4,
                                          cross_attention_dim=16, time_proj_dim=8, global_states_input_dim=16,
                                          cross_attention_input_dim=16),
                             {"hidden_states": _randn(1, 4, 8), "timestep": _values([10]),
                              "encoder_hidden_states": _randn(1, 3, 16), "global_hidden_states": _randn(1, 1, 16),
                              "rotary_embedding": None})],
}

_DENOISER_PACKAGES = ("diffusers.models.transformers", "diffusers.models.unets")
# exported from those packages but no denoiser: an adapter added to a UNet, an autoregressive token decoder
_NOT_DENOISERS = {"MotionAdapter", "MiniMaxMusic3RVQDepthDecoder"}


def denoiser_classes() -> list[str]:
    """Every model class diffusers exports from its transformers and unets packages (the denoisers)."""
    import diffusers

    out = []
    for name in dir(diffusers):
        if name.startswith("_"):
            continue
        try:
            obj = getattr(diffusers, name)
        except Exception:
            continue
        if (inspect.isclass(obj) and issubclass(obj, torch.nn.Module) and obj.__module__.startswith(_DENOISER_PACKAGES)
                and name not in _NOT_DENOISERS):
            out.append(name)
    return sorted(out)


@functools.lru_cache(maxsize=1)
def diffusers_configs() -> dict:
    return json.loads((HERE / "diffusers_tiny.json").read_text())


def diffusers_cases(classes: Optional[list[str]] = None) -> list[Case]:
    """The denoisers' cases (of ``classes`` only, when given: listing every denoiser imports them all)."""
    configs = diffusers_configs()["configs"]
    cases = []
    for cls_name in classes if classes is not None else denoiser_classes():
        variants = [(r["variant"], r["init"], r["inputs"]) for r in configs if r["class"] == cls_name]
        variants += _DIFFUSERS_CONFIGS.get(cls_name, []) if not variants or cls_name == "UNet2DConditionModel" else []
        if not variants:
            cases.append(Case("diffusers", cls_name, "denoiser", cls_name, functools.partial(_no_config, cls_name)))
            continue
        for variant, init, inputs in variants:
            name = cls_name if len(variants) == 1 else f"{cls_name}[{variant}]"
            cases.append(Case("diffusers", name, "denoiser", cls_name,
                              functools.partial(_build_diffusers, cls_name, init, inputs)))
    return cases


def _no_config(cls_name: str):
    raise Skip("no tiny configuration: diffusers' tests have none and the sweep has not written one")


def _build_diffusers(cls_name: str, init: dict, inputs: Any):
    import diffusers

    cls = getattr(diffusers, cls_name)
    try:
        torch.manual_seed(0)
        with quiet():
            if "__from_config__" in init:  # a pipeline test's denoiser, by its configuration
                model = cls.from_config(copy.deepcopy(init["__from_config__"])).float().eval()
            else:
                model = cls(**copy.deepcopy(init)).float().eval()
            gen = torch.Generator().manual_seed(0)
            kwargs = (_decode(inputs, gen) if "__dict__" in inputs
                      else {k: _decode(v, gen) for k, v in inputs.items()})
            kwargs = {k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
                      for k, v in kwargs.items()}
            with torch.no_grad():
                model(**kwargs)
    except Exception as exc:
        raise Skip(first_line(exc)) from None
    return model, (), kwargs


def find_case(key: str) -> Case:
    """The case of one sweep key (``transformers:gpt2``, ``timm:eva``, ``diffusers:UNet2DModel[...]``)."""
    library, name = key.split(":", 1)
    if library == "diffusers":
        cases = diffusers_cases([name.split("[", 1)[0]])
    else:
        cases = {"transformers": transformers_cases, "timm": timm_cases}[library]()
    found = [c for c in cases if c.key == key]
    if not found:
        raise KeyError(f"{key} is not among the sweep's models")
    return found[0]


def all_cases(libraries=("transformers", "timm", "diffusers")) -> list[Case]:
    out: list[Case] = []
    for library in libraries:
        out += {"transformers": transformers_cases, "timm": timm_cases, "diffusers": diffusers_cases}[library]()
    return out
