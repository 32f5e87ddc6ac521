"""A real training process for test_kill_resume.py: tiny BERT, VectorFit + AVF, the Trainer, checkpoints.

Usage: python kill_resume_train.py OUTPUT_DIR [--resume] [--slow]
Writes OUTPUT_DIR/final.safetensors (the trained vectors and head) when training ends.
"""

from __future__ import annotations

import sys
import time

import torch
import transformers
from safetensors.torch import save_file
from transformers import Trainer, TrainingArguments

from vf_avf import AVFConfig
from vf_avf.integrations.trainer import add_avf
from vf_backends_nlp.families import BERT
from vf_core import VectorFitConfig, get_vectorfit_model

STEPS, SAVE_EVERY = 12, 4
AVF = AVFConfig(policy="topk_ema", t_i=2, t_f=3, n_f=3, k=3)  # AVF steps 2, 5, 8: a resume lands mid-schedule


def dataset(n: int = 32):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 99, (n, 7), generator=gen)
    return [{"input_ids": ids[i], "attention_mask": torch.ones(7, dtype=torch.long), "labels": int(ids[i, 0] % 2)}
            for i in range(n)]


class Slow(transformers.TrainerCallback):
    """Leaves time to kill the process between checkpoints."""

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(0.4)


def main() -> None:
    out, resume, slow = sys.argv[1], "--resume" in sys.argv, "--slow" in sys.argv
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    vf = get_vectorfit_model(BERT.tiny_model(), VectorFitConfig())
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=4, max_steps=STEPS, save_steps=SAVE_EVERY,
                             save_strategy="steps", learning_rate=1e-2, weight_decay=0.01, report_to=[], seed=0,
                             logging_steps=1000, use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model=vf, args=args, train_dataset=dataset())
    add_avf(trainer, AVF)
    if slow:
        trainer.add_callback(Slow())
    trainer.train(resume_from_checkpoint=True if resume else None)
    save_file({n: p.detach().contiguous() for n, p in vf.named_parameters() if p.requires_grad},
              f"{out}/final.safetensors")


if __name__ == "__main__":
    main()
