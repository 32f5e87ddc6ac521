"""A VectorFitModel under the engines people already use, with nothing VectorFit-specific but AVF's callback: the
ordinary ``transformers.Trainer``, TRL's ``SFTTrainer`` and an ``accelerate`` loop. Their checkpoints hold only the
trained tensors (at most twice the adapter's size) and resuming from one ends bit-identical to the uninterrupted
run (CPU)."""

from __future__ import annotations

import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")
from safetensors import safe_open  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

from vf_avf import AVFConfig, VectorFreezer  # noqa: E402
from vf_avf.integrations.trainer import STATE_FILE, add_avf  # noqa: E402
from vf_backends_nlp.families import BERT  # noqa: E402
from vf_core import VectorFitConfig, get_vectorfit_model  # noqa: E402

STEPS, SAVE = 4, 2
AVF = AVFConfig(policy="topk_ema", t_i=1, t_f=1, n_f=2, k=3)  # AVF steps 1 and 2: the resumed run takes step 2


@pytest.fixture(autouse=True)
def _quiet():
    transformers.logging.set_verbosity_error()
    logging.getLogger("accelerate").setLevel(logging.ERROR)


def trained(vf) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in vf.state_dict().items()}


def adapter_bytes(vf, tmp_path) -> int:
    vf.save_pretrained(tmp_path / "adapter")
    return (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size


def saved_keys(path) -> set[str]:
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:3]


def check_checkpoint(vf, folder, tmp_path) -> None:
    weights = folder / "model.safetensors"
    assert saved_keys(weights) == vf.trained_state_keys()
    assert weights.stat().st_size <= 2 * adapter_bytes(vf, tmp_path)
    every = sum(p.numel() for p in vf.parameters())
    assert sum(t.numel() for t in vf.state_dict().values()) < every / 4  # the base is not in it


# ------------------------------------------------------------------------------------------------ Trainer
def classification_data(n: int = 16):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 99, (n, 7), generator=gen)
    return [{"input_ids": ids[i], "attention_mask": torch.ones(7, dtype=torch.long), "labels": int(ids[i, 0] % 2)}
            for i in range(n)]


def run_trainer(out, resume=None):
    vf = get_vectorfit_model(BERT.tiny_model(), VectorFitConfig())
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=4, max_steps=STEPS, save_steps=SAVE,
                             save_strategy="steps", learning_rate=1e-2, weight_decay=0.01, report_to=[], seed=0,
                             logging_steps=100, use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model=vf, args=args, train_dataset=classification_data())
    callback = add_avf(trainer, AVF)
    trainer.train(resume_from_checkpoint=resume)
    return vf, callback


def test_trainer_checkpoints_hold_the_trained_tensors_and_resume_exactly(tmp_path):
    vf, callback = run_trainer(tmp_path / "run")
    reference, frozen = trained(vf), callback.freezer.frozen
    assert len(frozen) == 3
    check_checkpoint(vf, tmp_path / "run" / "checkpoint-2", tmp_path)
    assert (tmp_path / "run" / "checkpoint-2" / STATE_FILE).is_file()

    resumed, callback2 = run_trainer(tmp_path / "run", resume=str(tmp_path / "run" / "checkpoint-2"))
    assert callback2.freezer.frozen == frozen and callback2.freezer.history == callback.freezer.history
    assert_same(trained(resumed), reference)


def test_a_checkpoint_of_the_whole_model_still_loads(tmp_path):
    """Checkpoints written before (the frozen base in them too) load as they did; strict loading of the trained
    tensors alone reports nothing missing, a missing vector still is."""
    vf = get_vectorfit_model(BERT.tiny_model(), VectorFitConfig())
    vf.state_dict_trained_only = False
    everything = vf.state_dict()
    vf.state_dict_trained_only = True
    assert len(everything) > len(vf.state_dict())
    other = get_vectorfit_model(BERT.tiny_model(), VectorFitConfig())
    assert not other.load_state_dict(everything).missing_keys
    assert not other.load_state_dict(vf.state_dict()).missing_keys
    partial = dict(vf.state_dict())
    dropped = next(iter(partial))
    del partial[dropped]
    assert other.load_state_dict(partial, strict=False).missing_keys == [dropped]
    with pytest.raises(RuntimeError, match="Missing key"):
        other.load_state_dict(partial)


# ------------------------------------------------------------------------------------------------ TRL
def run_sft(out, resume=None):
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    from vf_backends_nlp.testing import tiny_causal_lm, word_tokenizer

    tok = word_tokenizer()
    vf = get_vectorfit_model(tiny_causal_lm("llama", vocab_size=len(tok)), VectorFitConfig())
    texts = ["the cat sat on the mat .", "the dog ran in the sun .", "a bird flew over the tree .",
             "the fish swam in the pond ."]
    args = trl.SFTConfig(output_dir=str(out), max_steps=STEPS, save_steps=SAVE, save_strategy="steps",
                         per_device_train_batch_size=4, learning_rate=1e-2, report_to="none", use_cpu=True,
                         logging_steps=100, max_length=32, disable_tqdm=True, seed=0, dataloader_num_workers=0)
    trainer = trl.SFTTrainer(model=vf, args=args, processing_class=tok,
                             train_dataset=datasets.Dataset.from_list([{"text": t} for t in texts * 4]))
    callback = add_avf(trainer, AVF)
    trainer.train(resume_from_checkpoint=resume)
    return vf, callback


def test_sft_trainer_checkpoints_hold_the_trained_tensors_and_resume_exactly(tmp_path):
    vf, callback = run_sft(tmp_path / "sft")
    reference = trained(vf)
    check_checkpoint(vf, tmp_path / "sft" / "checkpoint-2", tmp_path)

    resumed, callback2 = run_sft(tmp_path / "sft", resume=str(tmp_path / "sft" / "checkpoint-2"))
    assert callback2.freezer.frozen == callback.freezer.frozen and len(callback.freezer.frozen) == 3
    assert_same(trained(resumed), reference)


# ------------------------------------------------------------------------------------------------ accelerate
def run_accelerate(folder, *, stop_at=None, resume=False):
    """A plain loop under ``accelerate``; the freezer is registered for checkpointing (the one extra line)."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    vf = get_vectorfit_model(BERT.tiny_model(), VectorFitConfig())
    optimizer = torch.optim.AdamW(vf.parameter_groups(1e-2), weight_decay=0.01)
    model, optimizer = accelerator.prepare(vf, optimizer)
    freezer = VectorFreezer(model, AVF, total_steps=STEPS)
    accelerator.register_for_checkpointing(freezer)
    data = classification_data()
    start = 0
    if resume:
        accelerator.load_state(str(folder))
        start = freezer.last_step + 1
    model.train()
    for step in range(start, STEPS):
        batch = data[4 * step: 4 * step + 4]
        loss = model(input_ids=torch.stack([b["input_ids"] for b in batch]),
                     labels=torch.tensor([b["labels"] for b in batch])).loss
        accelerator.backward(loss)
        freezer.step(step)
        optimizer.step()
        optimizer.zero_grad()
        if step + 1 == stop_at:
            accelerator.save_state(str(folder))
            return vf, freezer
    return vf, freezer


def test_accelerate_save_state_holds_the_trained_tensors_and_resumes_exactly(tmp_path):
    straight, freezer = run_accelerate(tmp_path / "unused")
    reference = trained(straight)
    stopped, _ = run_accelerate(tmp_path / "state", stop_at=SAVE)
    check_checkpoint(stopped, tmp_path / "state", tmp_path)

    resumed, freezer2 = run_accelerate(tmp_path / "state", resume=True)
    assert freezer2.frozen == freezer.frozen and freezer2.history == freezer.history and len(freezer.frozen) == 3
    assert_same(trained(resumed), reference)


def test_the_command_checks_a_checkpoint_fits_before_resuming(tmp_path):
    """``--resume`` from another method's (or options') checkpoint is one line; the Trainer alone would only warn."""
    from safetensors.torch import save_file
    from vf_backends_nlp.trainer_run import _check_fits
    from vf_core.errors import TaskError

    vf = get_vectorfit_model(BERT.tiny_model(), VectorFitConfig())
    save_file({k: v.contiguous() for k, v in vf.state_dict().items()}, str(tmp_path / "model.safetensors"))
    _check_fits(vf, tmp_path)
    vf.state_dict_trained_only = False  # a checkpoint written before, the whole model in it
    save_file({k: v.contiguous() for k, v in vf.state_dict().items()}, str(tmp_path / "model.safetensors"))
    _check_fits(vf, tmp_path)
    svfit = get_vectorfit_model(BERT.tiny_model(), VectorFitConfig(method="svfit", rank=4))
    with pytest.raises(TaskError, match="does not fit this model"):
        _check_fits(svfit, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(TaskError, match="no model.safetensors"):
        _check_fits(vf, tmp_path)
