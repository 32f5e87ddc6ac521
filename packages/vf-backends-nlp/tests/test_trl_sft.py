"""A VectorFitModel trains under TRL's ``SFTTrainer`` (its fused LM-head loss calls ``model.base_model`` for the
backbone's hidden states), with AVF through vf-avf's callback; the plain model trains under the same call."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from transformers import TrainerCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402
from vf_avf.integrations.trainer import AVFCallback  # noqa: E402
from vf_backends_nlp.testing import tiny_causal_lm, word_tokenizer  # noqa: E402
from vf_core import VectorFitConfig, get_vectorfit_model  # noqa: E402

TEXTS = ["the cat sat on the mat .", "the dog ran in the sun .", "a bird flew over the tree .",
         "the fish swam in the pond ."]


def _train(model, tokenizer, tmp_path, callbacks=()):
    ds = datasets.Dataset.from_list([{"text": t} for t in TEXTS * 4])
    args = SFTConfig(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2,
                     report_to="none", use_cpu=True, save_strategy="no", logging_steps=1, max_length=32,
                     disable_tqdm=True, seed=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                         callbacks=list(callbacks))
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


class _Snapshot(TrainerCallback):
    """The vectors' values after optimizer step ``at``."""

    def __init__(self, vf, at: int) -> None:
        self.vf, self.at, self.values = vf, at, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            self.values = {v.name: v.parameter.detach().clone() for v in self.vf.vectors}


def test_wrapper_resolves_base_model_like_the_model_it_wraps():
    model = tiny_causal_lm("llama")
    vf = get_vectorfit_model(model, VectorFitConfig())
    assert vf.get_base_model() is model
    assert vf.base_model is model.model  # the transformers backbone, as on the causal LM itself
    assert vf.get_output_embeddings() is model.lm_head


def test_vectorfit_model_trains_under_sft_trainer_with_avf(tmp_path):
    tok = word_tokenizer()
    vf = get_vectorfit_model(tiny_causal_lm("llama", vocab_size=len(tok)), VectorFitConfig())
    vectors_before = {v.name: v.parameter.detach().clone() for v in vf.vectors}
    vector_ids = {id(v.parameter) for v in vf.vectors}
    frozen_before = {n: p.detach().clone() for n, p in vf.named_parameters() if id(p) not in vector_ids}
    # AVF steps at global steps 1 and 2 (steps already taken): the set frozen at 2 holds for optimizer steps 3, 4
    avf = AVFCallback({"policy": "topk_ema", "t_i": 1, "t_f": 1, "n_f": 2, "k": 2}, model=vf)
    snapshot = _Snapshot(vf, at=2)

    losses = _train(vf, tok, tmp_path / "vf", callbacks=[avf, snapshot])

    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    frozen = sorted(avf.freezer.frozen)
    assert len(frozen) == 2, frozen  # AVF froze its k vectors at its steps
    assert [r.step for r in avf.freezer.history] == [1, 2]
    for name in frozen:  # frozen vectors did not move in steps 3 and 4
        assert torch.equal(snapshot.values[name], vf.vectors[name].parameter), name
    assert any(not torch.equal(snapshot.values[v.name], v.parameter) for v in vf.vectors if v.name not in frozen)
    moved = [n for n, v in vectors_before.items() if not torch.equal(v, vf.vectors[n].parameter)]
    sigma_moved = [n for n in moved if vf.vectors[n].kind == "sigma"]
    assert len(sigma_moved) > 10, "the singular values did not train"
    for name, value in frozen_before.items():  # U, V, embeddings, norms, lm_head: untouched
        assert torch.equal(value, dict(vf.named_parameters())[name]), name


def test_the_plain_model_trains_under_the_same_call(tmp_path):
    tok = word_tokenizer()
    model = tiny_causal_lm("llama", vocab_size=len(tok))
    before = model.lm_head.weight.detach().clone()
    losses = _train(model, tok, tmp_path / "plain")
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert not torch.equal(before, model.lm_head.weight)


def test_checkpoints_written_before_the_rename_still_resume(tmp_path):
    """Trainer checkpoints of a VectorFitModel used to name tensors ``base_model.<...>``; now ``model.<...>``."""
    from safetensors.torch import load_file, save_file

    vf = get_vectorfit_model(tiny_causal_lm("llama"), VectorFitConfig())
    sigma = next(v for v in vf.vectors if v.kind == "sigma")
    name = next(n for n, p in vf.named_parameters() if p is sigma.parameter)
    assert name.startswith("model.model.layers.")
    old = {"base_model." + name[len("model."):]: torch.full_like(sigma.parameter, 7.0)}
    save_file(old, str(tmp_path / "model.safetensors"))
    result = vf.load_state_dict(load_file(str(tmp_path / "model.safetensors")), False)  # as the Trainer loads
    assert not result.unexpected_keys and name not in result.missing_keys
    assert torch.equal(sigma.parameter, torch.full_like(sigma.parameter, 7.0))
