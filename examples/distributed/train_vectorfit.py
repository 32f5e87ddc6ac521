"""Train a VectorFitModel with AVF in a plain ``accelerate`` loop: one process, DDP, FSDP2 or DeepSpeed ZeRO-2.

The same script under each launcher (docs/distributed.md)::

    python train_vectorfit.py --output runs/one                                        # one process
    torchrun --nproc_per_node 2 train_vectorfit.py --output runs/ddp                   # DDP (gloo on CPU, NCCL)
    accelerate launch --config_file fsdp2.yaml train_vectorfit.py --output runs/fsdp   # FSDP2 (GPUs)
    accelerate launch --config_file deepspeed_zero2.yaml train_vectorfit.py --output runs/ds --no-avf  # ZeRO-2

``--model`` takes a local Hugging Face folder (``AutoModelForSequenceClassification``, a new 2-class head) or
``tiny`` (a random 2-layer BERT built from a config: nothing is downloaded). The data are random token ids
labelled by a rule, so that the script runs anywhere: put your own ``DataLoader`` in their place.

What VectorFit needs from the loop is the ordinary: build the optimizer from ``vf.parameter_groups`` before
``accelerator.prepare``, the :class:`~vf_avf.VectorFreezer` after it (``freezer.step(step)`` between ``backward`` and
``optimizer.step``), and ``accelerator.register_for_checkpointing(freezer)`` so that ``save_state`` keeps AVF's
state beside the model file, which holds only the trained tensors. ``--resume`` continues from ``OUTPUT/state``.
Every rank calls ``vf.save_pretrained``: FSDP gathers the shards, rank 0 alone writes.

DeepSpeed ZeRO reduces each gradient into its own partitioned buffers during ``backward``, before the freezer
could drop it, so AVF does not freeze anything there: run ZeRO-2 with ``--no-avf``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, TensorDataset

from vf_avf import AVFConfig, VectorFreezer
from vf_core import VectorFitConfig, get_vectorfit_model


class Progress:
    """The optimizer steps taken, saved and restored with ``accelerator.save_state`` / ``load_state``."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


def build_model(spec: str, seed: int):
    import transformers

    set_seed(seed)
    if spec == "tiny":
        config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=64, max_position_embeddings=32, num_labels=2,
                                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        return transformers.BertForSequenceClassification(config)
    return transformers.AutoModelForSequenceClassification.from_pretrained(spec, num_labels=2)


def synthetic_data(n: int, vocab: int, seed: int) -> TensorDataset:
    """``n`` sequences of 8 token ids; the label says whether the first id is in the upper half of the vocabulary."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, 8), generator=gen)
    return TensorDataset(ids, (ids[:, 0] >= vocab // 2).long())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="a local Hugging Face model folder, or 'tiny'")
    parser.add_argument("--output", required=True, help="folder for state/ (checkpoints) and adapter/")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=4, help="examples per process and step")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--save-every", type=int, default=4, help="save_state every N steps (0: never)")
    parser.add_argument("--stop-after", type=int, default=0, help="stop after N steps, as if killed (tests)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/state")
    parser.add_argument("--no-avf", action="store_true", help="no Adaptive Vector Freezing (DeepSpeed ZeRO)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    accelerator = Accelerator(cpu=not torch.cuda.is_available())  # on CPUs, torchrun's processes join over gloo
    out = Path(args.output)
    vf = get_vectorfit_model(build_model(args.model, args.seed), VectorFitConfig())
    optimizer = torch.optim.AdamW(vf.parameter_groups(args.lr), weight_decay=0.01)
    total = args.steps * args.batch_size * accelerator.num_processes
    data = synthetic_data(total, vf.config.vocab_size, args.seed)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False)  # accelerate gives each process its share
    model, optimizer, loader = accelerator.prepare(vf, optimizer, loader)

    freezer = None
    if not args.no_avf:  # AVF steps at 1/4 and 1/2 of the run: k vectors each
        freezer = VectorFreezer(model, AVFConfig(t_i=0.25, t_f=0.5, n_f=2, k=4), total_steps=args.steps)
        accelerator.register_for_checkpointing(freezer)
    progress = Progress()
    accelerator.register_for_checkpointing(progress)
    if args.resume:
        accelerator.load_state(str(out / "state"))

    model.train()
    losses = []
    batches = accelerator.skip_first_batches(loader, progress.step) if progress.step else loader
    for ids, labels in batches:
        if progress.step >= args.steps:
            break
        loss = model(input_ids=ids, labels=labels).loss
        accelerator.backward(loss)
        if freezer is not None:
            freezer.step(progress.step)
        optimizer.step()
        optimizer.zero_grad()
        progress.step += 1
        losses.append(loss.item())
        if args.save_every and progress.step % args.save_every == 0:
            accelerator.save_state(str(out / "state"))
        if progress.step == args.stop_after:
            return {"stopped_at": progress.step}

    vf.save_pretrained(out / "adapter")  # every rank: FSDP gathers the shards; rank 0 writes
    summary = {"steps": progress.step, "processes": accelerator.num_processes, "losses": losses,
               "frozen": sorted(freezer.frozen) if freezer is not None else None}
    if accelerator.is_main_process:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps({k: v for k, v in summary.items() if k != "losses"}))
    accelerator.wait_for_everyone()
    return summary


if __name__ == "__main__":
    main()
