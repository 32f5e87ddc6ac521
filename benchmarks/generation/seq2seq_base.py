"""Pre-train the seq2seq base of the generation benchmark: a small T5, from scratch, by denoising film reviews.

No pre-trained encoder-decoder ships in any package registry, so the benchmark builds its own (and says so next to
its figures): T5 architecture (pre-norm, relative position buckets, tied embeddings), 3 encoder and 3 decoder layers,
width 192, 4 heads of 48, feed-forward 768, the 4,096-token BPE tokenizer of :mod:`corpus` with a ``<pad>`` and a
``<mask>`` token added and ``<|endoftext|>`` closing every text (about 3.4M parameters). A BART of the same size
(post-norm) was tried first and stayed at the unigram loss (6.8 nats) for 500 steps at lr 1e-3, where this T5 and
the benchmark's GPT-2 leave it within 150. Objective: BART's text infilling. Review snippets of the pre-training corpus are
joined into sources of about 120 tokens; spans covering about 30 % of the tokens (lengths drawn from 1-5) are each
replaced by one ``<mask>``; the decoder writes the whole original text. AdamW, lr 1e-3, batch 16, 5 % warm-up, cosine
decay (:func:`pretrain.train_steps`, checkpointed and resumed). The finished base is a plain transformers folder,
``cache/seq2seq-base/model``, which ``vectorfit train --task seq2seq --model`` reads.

Example::

    nice -n 10 python benchmarks/generation/seq2seq_base.py --steps 1200
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LENGTH = 120
CONFIG = dict(d_model=192, d_kv=48, d_ff=768, num_layers=3, num_decoder_layers=3, num_heads=4, dropout_rate=0.0,
              feed_forward_proj="relu", tie_word_embeddings=True)


def tokenizer_for_seq2seq(corpus_tokenizer: Path):
    """The corpus tokenizer with ``<pad>`` and ``<mask>`` added and ``<|endoftext|>`` appended to every text."""
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(str(corpus_tokenizer))
    tok.add_special_tokens({"pad_token": "<pad>", "mask_token": "<mask>"})
    eos = tok.eos_token
    tok._tokenizer.post_processor = TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
                                                       special_tokens=[(eos, tok.eos_token_id)])
    return tok


def sources(tokenizer, texts: list[str], length: int = LENGTH) -> list[list[int]]:
    """Token ids of consecutive texts joined by a space until about ``length`` tokens (no special tokens)."""
    out, cur = [], []
    for t in texts:
        ids = tokenizer((" " if cur else "") + t, add_special_tokens=False)["input_ids"]  # a space between texts
        if cur and len(cur) + len(ids) > length:
            out.append(cur)
            cur = []
        cur = (cur + ids)[:length]
    return out + ([cur] if cur else [])


def infill(ids: list[int], mask_id: int, rng: random.Random, share: float = 0.3) -> list[int]:
    """BART text infilling: spans (lengths 1-5) covering about ``share`` of ``ids`` each become one mask token."""
    out, i, budget = [], 0, int(len(ids) * share)
    while i < len(ids):
        if budget > 0 and rng.random() < share / 3:
            span = min(rng.randint(1, 5), budget, len(ids) - i)
            out.append(mask_id)
            i += span
            budget -= span
        else:
            out.append(ids[i])
            i += 1
    return out


def pretrain_seq2seq(steps: int, cache: Path, *, batch: int = 16, lr: float = 1e-3, seed: int = 0,
                     threads: int = 0) -> Path:
    """Build (or find) ``cache/seq2seq-base/model`` and return its path."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from corpus import build
    from pretrain import save_base, train_steps

    if threads:
        torch.set_num_threads(threads)
    out = cache / "seq2seq-base"
    final = out / "model"
    if (final / "config.json").is_file():
        return final
    paths = build(cache)
    out.mkdir(parents=True, exist_ok=True)
    tok = tokenizer_for_seq2seq(paths["tokenizer"])
    texts = [t for t in paths["pretrain"].read_text(encoding="utf-8").splitlines() if t.strip()]
    data = sources(tok, texts)
    eos, pad, mask = tok.eos_token_id, tok.pad_token_id, tok.mask_token_id
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tok), pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad, **CONFIG)
    model = T5ForConditionalGeneration(config)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist()

    def padded(rows: list[list[int]], value: int) -> torch.Tensor:
        width = max(len(r) for r in rows)
        return torch.tensor([r + [value] * (width - len(r)) for r in rows])

    def loss_at(step: int):
        rng = random.Random(seed * 1_000_003 + step)
        rows = [data[order[(step * batch + j) % len(data)]] for j in range(batch)]
        src = padded([infill(r, mask, rng) + [eos] for r in rows], pad)
        labels = padded([r + [eos] for r in rows], -100)
        return model(input_ids=src, attention_mask=(src != pad).long(), labels=labels).loss

    log = train_steps(model, loss_at, steps, out / "checkpoint.pt", lr=lr)
    return save_base(model, tok, out, {"config": CONFIG, "steps": steps, "batch": batch, "source_tokens": LENGTH,
                                       "lr": lr, "sources": len(data), "epochs": round(steps * batch / len(data), 2),
                                       "objective": "text infilling, 30% in spans of 1-5", "log": log})


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    from pretrain import command_line

    command_line(pretrain_seq2seq, 1200)
