"""AVF inside a Hugging Face Trainer: no user call, state in each checkpoint, exact resume_from_checkpoint."""

from __future__ import annotations

import json
import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from transformers import Trainer, TrainingArguments  # noqa: E402

from vf_core import ConfigError, VectorFitConfig, get_vectorfit_model  # noqa: E402
from vf_avf import AVFConfig, FreezerStateError  # noqa: E402
from vf_avf.integrations.trainer import STATE_FILE, AVFCallback, add_avf  # noqa: E402

BERT = pytest.importorskip("vf_backends_nlp.families").BERT
CONFIG = AVFConfig(t_i=0.2, t_f=0.2, n_f=4, k=4)  # 10 steps: AVF steps 2, 4, 6, 8


def dataset(n: int = 24):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 99, (n, 7), generator=gen)
    return [{"input_ids": ids[i], "attention_mask": torch.ones(7, dtype=torch.long), "labels": int(ids[i, 0] % 2)}
            for i in range(n)]


def make_trainer(out_dir, **overrides):
    vf = get_vectorfit_model(BERT.tiny_model(), VectorFitConfig())
    args = dict(output_dir=str(out_dir), per_device_train_batch_size=4, max_steps=10, save_steps=5,
                learning_rate=1e-2, weight_decay=0.01, report_to=[], logging_steps=100, use_cpu=True, seed=0,
                disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False, save_strategy="steps")
    args.update(overrides)
    trainer = Trainer(model=vf, args=TrainingArguments(**args), train_dataset=dataset())
    return vf, trainer


def params(vf):
    return {n: p.detach().clone() for n, p in vf.named_parameters() if p.requires_grad}


@pytest.fixture(autouse=True)
def _quiet():
    transformers.logging.set_verbosity_error()
    logging.getLogger("accelerate").setLevel(logging.ERROR)


def test_trainer_callback_checkpoints_and_resumes_exactly(tmp_path):
    vf, trainer = make_trainer(tmp_path / "run")
    callback = add_avf(trainer, CONFIG)
    seen = {}

    class Snapshot(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 8:  # 8 optimizer steps taken: the next step is the last AVF step
                seen.update((v.name, v.parameter.detach().clone()) for v in vf.vectors)

    trainer.add_callback(Snapshot())
    trainer.train()
    assert [r.step for r in callback.freezer.history] == [2, 4, 6, 8]
    assert len(callback.freezer.frozen) == 4
    unchanged = {v.name for v in vf.vectors if torch.equal(seen[v.name], v.parameter.detach())}
    # steps 8 and 9 moved every vector but the frozen ones (a key bias may not move: softmax ignores it)
    assert set(callback.freezer.frozen) <= unchanged
    assert all(".key." in name and name.endswith(".bias") for name in unchanged - callback.freezer.frozen)
    reference = params(vf)
    for step in (5, 10):
        saved = json.loads((tmp_path / "run" / f"checkpoint-{step}" / STATE_FILE).read_text())
        assert saved["last_step"] == step - 1
        assert [r["step"] for r in saved["history"]] == [s for s in (2, 4, 6, 8) if s < step]

    # a fresh process-like start: new model, new trainer, new callback, resumed from the middle checkpoint
    vf2, trainer2 = make_trainer(tmp_path / "run")
    callback2 = AVFCallback(CONFIG)
    trainer2.add_callback(callback2)
    trainer2.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-5"))
    assert callback2.freezer.history == callback.freezer.history
    assert callback2.freezer.frozen == callback.freezer.frozen
    resumed = params(vf2)
    assert all(torch.equal(reference[n], resumed[n]) for n in reference)


def test_resuming_without_the_state_is_an_error_unless_asked(tmp_path):
    _, trainer = make_trainer(tmp_path / "run", max_steps=4, save_steps=2)
    add_avf(trainer, AVFConfig(t_i=1, t_f=1, n_f=2, k=2))
    trainer.train()
    (tmp_path / "run" / "checkpoint-2" / STATE_FILE).unlink()
    _, trainer2 = make_trainer(tmp_path / "run", max_steps=4, save_steps=2)
    callback = add_avf(trainer2, AVFConfig(t_i=1, t_f=1, n_f=2, k=2))
    with pytest.raises(FreezerStateError, match="resume_from"):
        trainer2.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    _, trainer3 = make_trainer(tmp_path / "run", max_steps=4, save_steps=2)
    callback = add_avf(trainer3, AVFConfig(t_i=1, t_f=1, n_f=2, k=2))
    callback.resume_from = False
    trainer3.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    assert callback.freezer.last_step == 3


def test_add_avf_needs_the_vectorfit_model(tmp_path):
    vf = get_vectorfit_model(BERT.tiny_model(), VectorFitConfig())
    trainer = Trainer(model=vf.get_base_model(), args=TrainingArguments(output_dir=str(tmp_path), report_to=[],
                                                                  use_cpu=True), train_dataset=dataset(4))
    with pytest.raises(ConfigError, match="VectorFitModel"):
        add_avf(trainer, CONFIG)
    callback = add_avf(trainer, CONFIG, model=vf)  # the Trainer may hold the base model if told where the vectors are
    assert callback.model is vf

    import vf_avf

    assert vf_avf.AVFCallback is AVFCallback and vf_avf.add_avf is add_avf  # loaded on first use
