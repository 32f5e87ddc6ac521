"""Rows of a ``causal-lm`` data source -> ``input_ids`` and ``labels`` (-100 where no loss is taken).

Three formats, recognised from the columns (in this order, the options name other columns):

* ``messages`` (``--messages-column``): a chat, a list of ``{"role", "content"}``, rendered with the tokenizer's
  chat template; the loss is on the assistant turns only. The assistant tokens come from the template's
  ``{% generation %}`` markers (transformers' ``return_assistant_tokens_mask``) when it has them, else from
  rendering the chat up to each assistant turn (with the generation prompt) and up to its end: the tokens in
  between are the turn's. A tokenizer without a chat template is an error (use one that has a template, or
  give prompt/completion or text rows).
* ``prompt`` + ``completion`` (``--prompt-column`` / ``--completion-column``): tokenised separately (the prompt
  with the tokenizer's special tokens, such as Llama's BOS; the completion without, then EOS); the loss is on
  the completion and its EOS only.
* ``text`` (``--text-column``): plain language modelling, EOS appended; the loss is on every token.

Length (``max_length`` tokens): a prompt + completion longer than it keeps the whole completion and the end of
the prompt (the prompt is cut from the left); a completion that does not fit even alone is cut on the right (no
prompt is left). Texts and chats are cut on the right. The number of cut examples is reported once, as a
warning. Rows left without any token to learn from (a chat whose assistant turns were all cut) are dropped,
also with a count.

Example:
    >>> from vf_backends_nlp.testing import word_tokenizer
    >>> tok = word_tokenizer()
    >>> ex = encode_prompt_completion(tok, "what is one plus one ?", "two", max_length=64)
    >>> tok.decode(ex.input_ids), ex.labels[-2:] == ex.input_ids[-2:], set(ex.labels[:-2])
    ('what is one plus one? two </s>', True, {-100})
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from vf_core.assets import DataError
from vf_core.errors import DataWarning

from .records import Records, pick_column

__all__ = ["Example", "DataFormat", "detect_format", "encode_text", "encode_prompt_completion", "encode_messages",
           "encode_records", "LMDataset", "lm_collator", "has_generation_markers", "IGNORE"]

#: the label of a token the loss skips
IGNORE = -100

_GENERATION = re.compile(r"{%-?\s*generation\s*-?%}")


@dataclass
class Example:
    """One tokenised row: ``input_ids`` and ``labels`` of the same length; ``truncated`` if it was cut."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False


@dataclass(frozen=True)
class DataFormat:
    """How a source's rows are read: ``kind`` (``messages``, ``prompt-completion`` or ``text``) and its columns."""

    kind: str
    columns: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"kind": self.kind, "columns": dict(self.columns)}


def detect_format(columns: Sequence[str], source: str, *, text_column: Optional[str] = None,
                  prompt_column: Optional[str] = None, completion_column: Optional[str] = None,
                  messages_column: Optional[str] = None) -> DataFormat:
    """The format of a source with ``columns``: a named column decides it, else the first default present
    (``messages``; ``prompt`` + ``completion``; ``text``). :class:`DataError` naming the columns found and the
    options otherwise."""
    columns = list(columns)
    if messages_column is not None:
        return DataFormat("messages", {"messages": pick_column(messages_column, (), columns, "messages", source,
                                                               "--messages-column")})
    if prompt_column is not None or completion_column is not None:
        return DataFormat("prompt-completion", {
            "prompt": pick_column(prompt_column, ("prompt",), columns, "prompt", source, "--prompt-column"),
            "completion": pick_column(completion_column, ("completion",), columns, "completion", source,
                                      "--completion-column")})
    if text_column is not None:
        return DataFormat("text", {"text": pick_column(text_column, (), columns, "text", source, "--text-column")})
    if "messages" in columns:
        return DataFormat("messages", {"messages": "messages"})
    if "prompt" in columns and "completion" in columns:
        return DataFormat("prompt-completion", {"prompt": "prompt", "completion": "completion"})
    if "text" in columns:
        return DataFormat("text", {"text": "text"})
    raise DataError(f"{source}: causal-lm reads a 'text' column, 'prompt' + 'completion' columns or a 'messages'"
                    f" column; its columns: {', '.join(map(str, columns)) or '(none)'}; name yours with"
                    f" --text-column, --prompt-column/--completion-column or --messages-column")


# ------------------------------------------------------------------------------------------------ encoders
def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _eos(tokenizer) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def encode_text(tokenizer, text: str, max_length: int) -> Example:
    """``text`` + EOS, the loss on every token; cut on the right to ``max_length``."""
    ids = _ids(tokenizer, text, True)
    eos = _eos(tokenizer)
    if eos and (not ids or ids[-1] != eos[0]):
        ids += eos
    cut = len(ids) > max_length
    ids = ids[:max_length]
    return Example(ids, list(ids), cut)


def encode_prompt_completion(tokenizer, prompt: str, completion: str, max_length: int) -> Example:
    """Prompt + completion + EOS, the loss on the completion and EOS; over ``max_length``, the prompt is cut from
    the left (a completion too long even alone is cut on the right, without prompt)."""
    p = _ids(tokenizer, prompt, True)
    c = _ids(tokenizer, completion, False) + _eos(tokenizer)
    cut = len(p) + len(c) > max_length
    if cut:
        if len(c) >= max_length:
            p, c = [], c[:max_length]
        else:
            p = p[len(p) - (max_length - len(c)):]
    return Example(p + c, [IGNORE] * len(p) + c, cut)


def has_generation_markers(tokenizer) -> bool:
    """Whether the tokenizer's chat template marks assistant content with ``{% generation %}``."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return isinstance(template, str) and bool(_GENERATION.search(template))


def _render(tokenizer, messages: list, *, add_generation_prompt: bool = False) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return _ids(tokenizer, text, False)


def encode_messages(tokenizer, messages: list, max_length: int, *, where: str = "a chat") -> Example:
    """A chat rendered with the tokenizer's chat template, the loss on the assistant turns; cut on the right.

    With ``{% generation %}`` markers in the template, transformers' assistant mask says which tokens are the
    assistant's. Without them, each assistant turn is located by rendering the chat up to it (with the generation
    prompt) and up to its end: both renderings must be prefixes of the whole chat's. A template that renders earlier
    turns differently depending on what follows (some move the system prompt into the last user turn) breaks that,
    and the chat is refused with a :class:`DataError` naming ``where`` rather than trained on the wrong tokens."""
    try:
        if has_generation_markers(tokenizer):
            out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=True)
            ids = list(out["input_ids"])
            labels = [t if m else IGNORE for t, m in zip(ids, out["assistant_masks"])]
        else:
            ids = _render(tokenizer, messages)
            labels = [IGNORE] * len(ids)
            for i, message in enumerate(messages):
                if message["role"] != "assistant":
                    continue
                before = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else []
                upto = _render(tokenizer, messages[:i + 1])
                if ids[:len(before)] != before or ids[:len(upto)] != upto:
                    raise DataError(
                        f"{where}: the tokenizer's chat template renders the turns before assistant turn {i + 1}"
                        " differently once later turns follow (it is not prefix-consistent, e.g. it moves the system"
                        " prompt), so the assistant tokens cannot be located; add {% generation %} markers to the"
                        " template, or give prompt/completion data")
                labels[len(before):len(upto)] = ids[len(before):len(upto)]
    except DataError:
        raise
    except Exception as exc:  # jinja's TemplateError (a template that refuses a role), or a malformed chat
        raise DataError(f"{where}: the tokenizer's chat template refused this chat ({type(exc).__name__}:"
                        f" {' '.join(str(exc).split())[:160]})") from None
    cut = len(ids) > max_length
    return Example(ids[:max_length], labels[:max_length], cut)


def _check_messages(value: Any, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: messages must be a non-empty list of {{role, content}}, got {type(value).__name__}")
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: each message must be an object with 'role' and 'content' strings, got {m!r:.80}")
    return value


def _check_text(value: Any, where: str, column: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: column {column!r} must hold text, got {type(value).__name__}")
    return value


def encode_records(records: Records, tokenizer, fmt: DataFormat, max_length: int, *, what: str = "data") -> list[Example]:
    """Every row of ``records`` encoded in ``fmt``; warns once with the count of cut rows and of dropped ones
    (no token left to learn from). :class:`DataError` names the first bad row."""
    if fmt.kind == "messages" and not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{records.source}: messages (chat) data needs a tokenizer with a chat template, and this"
                        f" model's tokenizer has none; use a model whose tokenizer has one, or give prompt/completion"
                        f" or text data")
    cols = fmt.columns
    out, cut, dropped = [], 0, 0
    for i, row in enumerate(records.rows):
        where = records.where(i)
        if fmt.kind == "messages":
            ex = encode_messages(tokenizer, _check_messages(row.get(cols["messages"]), where), max_length, where=where)
        elif fmt.kind == "prompt-completion":
            ex = encode_prompt_completion(tokenizer, _check_text(row.get(cols["prompt"]), where, cols["prompt"]),
                                          _check_text(row.get(cols["completion"]), where, cols["completion"]),
                                          max_length)
        else:
            ex = encode_text(tokenizer, _check_text(row.get(cols["text"]), where, cols["text"]), max_length)
        cut += ex.truncated
        if sum(label != IGNORE for label in ex.labels[1:]) == 0:
            dropped += 1
            continue
        out.append(ex)
    rule = {"prompt-completion": "prompts cut from the left to keep the completion",
            "messages": "chats cut on the right", "text": "texts cut on the right"}[fmt.kind]
    if cut:
        warnings.warn(f"{what}: {cut} of {len(records)} examples are longer than --max-length {max_length} tokens"
                      f" ({rule})", DataWarning, stacklevel=2)
    if dropped:
        warnings.warn(f"{what}: {dropped} of {len(records)} examples have no token to learn from (after cutting to"
                      f" --max-length {max_length}) and were skipped", DataWarning, stacklevel=2)
    return out


# ------------------------------------------------------------------------------------------------ batches
class LMDataset:
    """Encoded examples as the Trainer wants them (a map-style dataset of feature dicts)."""

    def __init__(self, examples: Sequence[Example]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        ex = self.examples[i]
        return {"input_ids": ex.input_ids, "labels": ex.labels}


def lm_collator(pad_token_id: int):
    """Pads a batch on the right: ``input_ids`` with ``pad_token_id``, ``attention_mask`` 0, ``labels`` -100."""
    import torch

    def collate(features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            ids[row, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
            mask[row, :n] = 1
            labels[row, :n] = torch.tensor(f["labels"], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate
