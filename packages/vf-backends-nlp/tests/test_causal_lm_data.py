"""causal-lm data: formats from columns, loss masks, the --max-length rule, batches, perplexity, claims."""

from __future__ import annotations

import json
import math
import types

import pytest
import torch

pytest.importorskip("transformers")

from vf_backends_nlp.causal_lm_data import (  # noqa: E402
    IGNORE,
    DataFormat,
    LMDataset,
    detect_format,
    encode_messages,
    encode_prompt_completion,
    encode_records,
    encode_text,
    lm_collator,
)
from vf_backends_nlp.causal_lm_runner import PerplexityTrainer, _metrics  # noqa: E402
from vf_backends_nlp.causal_lm_task import claim_causal_data, claim_causal_model  # noqa: E402
from vf_backends_nlp.perplexity import nll_and_count  # noqa: E402
from vf_backends_nlp.records import Records  # noqa: E402
from vf_backends_nlp.tasks import claim_model as text_claim_model  # noqa: E402
from vf_backends_nlp.testing import (  # noqa: E402
    CHAT_TEMPLATE,
    CHAT_TEMPLATE_MARKED,
    save_tiny_causal_lm,
    tiny_causal_lm,
    word_tokenizer,
)
from vf_backends_nlp.trainer_run import evaluate_with_trainer  # noqa: E402
from vf_core.assets import DataError  # noqa: E402
from vf_core.tasks import MAYBE, NO, SURE  # noqa: E402

CHAT = [{"role": "system", "content": "say yes"}, {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi you"}, {"role": "user", "content": "one plus one ?"},
        {"role": "assistant", "content": "two"}]


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


def _words(tok, ids):
    return tok.convert_ids_to_tokens([i for i in ids if i != IGNORE])


# ------------------------------------------------------------------------------------------------ formats
def test_format_is_recognised_from_the_columns():
    assert detect_format(["messages", "id"], "f").kind == "messages"
    assert detect_format(["prompt", "completion", "text"], "f") == DataFormat(
        "prompt-completion", {"prompt": "prompt", "completion": "completion"})
    assert detect_format(["text", "prompt"], "f").columns == {"text": "text"}
    assert detect_format(["q", "a"], "f", prompt_column="q", completion_column="a").columns == {"prompt": "q",
                                                                                                "completion": "a"}
    assert detect_format(["body"], "f", text_column="body").kind == "text"
    assert detect_format(["chat"], "f", messages_column="chat").columns == {"messages": "chat"}


def test_missing_columns_name_the_columns_found_and_the_options():
    with pytest.raises(DataError) as err:
        detect_format(["question", "answer"], "qa.jsonl")
    line = str(err.value)
    assert "\n" not in line and "question, answer" in line
    for option in ("--text-column", "--prompt-column", "--messages-column"):
        assert option in line
    with pytest.raises(DataError, match="no column 'body'.*--text-column"):
        detect_format(["text"], "f", text_column="body")


# ------------------------------------------------------------------------------------------------ masks
def test_text_gets_eos_and_loss_everywhere_cut_on_the_right(tok):
    ex = encode_text(tok, "the cat sat", 64)
    assert _words(tok, ex.input_ids) == ["the", "cat", "sat", "</s>"] and ex.labels == ex.input_ids
    cut = encode_text(tok, "the cat sat on the mat", 3)
    assert _words(tok, cut.input_ids) == ["the", "cat", "sat"] and cut.truncated


def test_prompt_completion_loss_on_the_completion_only(tok):
    ex = encode_prompt_completion(tok, "what is one ?", "one", 64)
    assert _words(tok, ex.input_ids) == ["what", "is", "one", "?", "one", "</s>"]
    assert _words(tok, ex.labels) == ["one", "</s>"] and ex.labels[:4] == [IGNORE] * 4 and not ex.truncated


def test_long_prompt_is_cut_from_the_left_keeping_the_completion(tok):
    ex = encode_prompt_completion(tok, "the cat sat on the mat . what is one ?", "one is one", 7)
    assert len(ex.input_ids) == 7 and ex.truncated
    assert tok.convert_ids_to_tokens(ex.input_ids) == ["is", "one", "?", "one", "is", "one", "</s>"]
    assert _words(tok, ex.labels) == ["one", "is", "one", "</s>"]
    alone = encode_prompt_completion(tok, "what is one ?", "one two three four five", 3)
    assert tok.convert_ids_to_tokens(alone.input_ids) == ["one", "two", "three"] and alone.labels == alone.input_ids


@pytest.mark.parametrize("template", [CHAT_TEMPLATE, CHAT_TEMPLATE_MARKED], ids=["prefixes", "generation-markers"])
def test_messages_loss_on_the_assistant_turns_only(template):
    tok = word_tokenizer(chat_template=template)
    ex = encode_messages(tok, CHAT, 64)
    rendered = tok.convert_ids_to_tokens(ex.input_ids)
    assert rendered[:4] == ["<|system|>", "say", "yes", "<|end|>"]
    # each assistant turn's content and its end token train; roles, system and user turns do not
    assert _words(tok, ex.labels) == ["hi", "you", "<|end|>", "two", "<|end|>"]
    assert ex.labels[rendered.index("<|assistant|>")] == IGNORE


def test_both_ways_of_finding_assistant_tokens_agree():
    plain = encode_messages(word_tokenizer(chat_template=CHAT_TEMPLATE), CHAT, 64)
    marked = encode_messages(word_tokenizer(chat_template=CHAT_TEMPLATE_MARKED), CHAT, 64)
    assert plain.input_ids == marked.input_ids and plain.labels == marked.labels


#: renders the system prompt inside the *last* user turn (as Mistral-Instruct's templates do): not prefix-consistent
MOVING_SYSTEM = ("{% set last_user = messages | selectattr('role', 'equalto', 'user') | list | last %}"
                 "{% for m in messages %}{% if m['role'] == 'user' %}<|user|> {% if messages[0]['role'] == 'system'"
                 " and m is sameas last_user %}{{ messages[0]['content'] }} {% endif %}{{ m['content'] }} <|end|> "
                 "{% elif m['role'] == 'assistant' %}<|assistant|> {{ m['content'] }} <|end|> {% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")
#: refuses a system turn, as Gemma's templates do
NO_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
             "{% endif %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}")


def test_a_template_that_moves_the_system_prompt_is_refused_not_mislabelled():
    tok = word_tokenizer(chat_template=MOVING_SYSTEM)
    chat = [{"role": "system", "content": "say yes"}, {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi you"}, {"role": "user", "content": "one plus one"},
            {"role": "assistant", "content": "two"}]
    with pytest.raises(DataError, match=r"row 7: the tokenizer's chat template renders the turns before assistant"
                                        r" turn 3 differently .*generation"):
        encode_messages(tok, chat, 64, where="row 7")
    one_turn = encode_messages(tok, chat[:3], 64)  # one user turn: the system prompt stays where it was
    assert _words(tok, one_turn.labels) == ["hi", "you", "<|end|>"]


def test_a_template_that_refuses_a_chat_is_a_data_error_naming_the_row(tok):
    refusing = word_tokenizer(chat_template=NO_SYSTEM)
    rows = [{"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]},
            {"messages": CHAT}]
    with pytest.raises(DataError, match=r"data.jsonl, line 2: the tokenizer's chat template refused this chat .*System"
                                        r" role not supported"):
        encode_records(_records(rows), refusing, DataFormat("messages", {"messages": "messages"}), 64)


def _records(rows, source="data.jsonl"):
    return Records(rows=rows, columns=sorted({k for r in rows for k in r}), source=source,
                   lines=list(range(1, len(rows) + 1)))


def test_messages_without_a_chat_template_is_one_clear_line(tok):
    with pytest.raises(DataError) as err:
        encode_records(_records([{"messages": CHAT}]), tok, DataFormat("messages", {"messages": "messages"}), 64)
    assert "chat template" in str(err.value) and "prompt/completion or text" in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_rows_are_named_and_cut_rows_counted_once(tok):
    fmt = DataFormat("prompt-completion", {"prompt": "prompt", "completion": "completion"})
    with pytest.raises(DataError, match=r"data.jsonl, line 2: column 'completion' must hold text"):
        encode_records(_records([{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": 3}]), tok, fmt, 8)
    rows = [{"prompt": "the cat sat on the mat", "completion": "yes"}] * 3 + [{"prompt": "a", "completion": "no"}]
    with pytest.warns(UserWarning, match=r"3 of 4 examples are longer than --max-length 4 .*prompts cut from the"
                                         r" left") as record:
        out = encode_records(_records(rows), tok, fmt, 4)
    assert len(record) == 1 and len(out) == 4
    chat_fmt = DataFormat("messages", {"messages": "messages"})
    with pytest.raises(DataError, match="line 1: each message must be an object"):
        encode_records(_records([{"messages": [{"role": "user"}]}]), word_tokenizer(chat_template=CHAT_TEMPLATE),
                       chat_fmt, 64)


def test_collator_pads_right_with_pad_and_ignored_labels():
    collate = lm_collator(0)
    batch = collate([{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [9], "labels": [9]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [9, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [9, IGNORE, IGNORE]]


# ------------------------------------------------------------------------------------------------ perplexity
def test_eval_perplexity_is_exp_of_the_token_mean_nll(tok, tmp_path):
    model = tiny_causal_lm("llama", vocab_size=len(tok)).eval()
    examples = [encode_prompt_completion(tok, "what is one ?", "one is one", 64),
                encode_text(tok, "the cat sat on the mat .", 64),
                encode_text(tok, "hi", 64)]
    total, count = 0.0, 0  # by hand: one example at a time, the next-token NLL of every target token
    with torch.no_grad():
        for ex in examples:
            logits = model(torch.tensor([ex.input_ids])).logits[0, :-1].double()
            targets = torch.tensor(ex.labels[1:])
            logp = torch.log_softmax(logits, dim=-1)
            for pos, target in enumerate(targets.tolist()):
                if target != IGNORE:
                    total -= float(logp[pos, target])
                    count += 1
    expected = total / count
    # the batch reduction alone
    batch = lm_collator(tok.pad_token_id)([LMDataset(examples)[i] for i in range(3)])
    with torch.no_grad():
        sums = nll_and_count(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                             batch["labels"])
    assert sums[:, 1].tolist() == [4.0, 7.0, 1.0]
    assert float(sums[:, 0].sum()) / 12 == pytest.approx(expected, rel=1e-5)
    # through the Trainer, in batches of 2 of unequal token counts: eval_loss is the token mean, not a mean of means
    args = types.SimpleNamespace(eval_batch_size=2, device="cpu")
    metrics = evaluate_with_trainer(model, args, tokenizer=tok, eval_ds=LMDataset(examples),
                                    collator=lm_collator(tok.pad_token_id), compute_metrics=_metrics,
                                    preprocess_logits_for_metrics=nll_and_count, trainer_cls=PerplexityTrainer,
                                    output_dir=tmp_path)
    assert metrics["eval_loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
    assert metrics["eval_tokens"] == 12


# ------------------------------------------------------------------------------------------------ claims
def test_claims(tmp_path):
    llama = save_tiny_causal_lm(tmp_path / "llama")
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=64)).save_pretrained(tmp_path / "bert")
    assert claim_causal_model(str(llama)) == SURE and text_claim_model(str(llama)) == MAYBE
    assert claim_causal_model(str(tmp_path / "bert")) == NO and text_claim_model(str(tmp_path / "bert")) == SURE
    assert claim_causal_model("org/some-model") == MAYBE
    pc = tmp_path / "pc.jsonl"
    pc.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    chats = tmp_path / "chats.json"
    chats.write_text(json.dumps([{"messages": CHAT}, {"messages": CHAT}]))
    text = tmp_path / "text.jsonl"
    text.write_text(json.dumps({"text": "the cat"}) + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\xff\xfe{not json")
    csv = tmp_path / "t.csv"
    csv.write_text("text\nthe cat\n")
    assert claim_causal_data(str(pc)) == SURE and claim_causal_data(str(chats)) == SURE
    assert claim_causal_data(str(text)) == MAYBE and claim_causal_data(str(csv)) == MAYBE
    assert claim_causal_data(str(bad)) == MAYBE and claim_causal_data(str(tmp_path / "missing.jsonl")) == NO


def test_generation_stops_at_every_end_token_of_the_model_and_the_tokenizer(tok):
    from vf_backends_nlp.causal_lm_runner import stop_tokens

    model = types.SimpleNamespace(generation_config=types.SimpleNamespace(eos_token_id=[1, 107]))
    assert stop_tokens(model, tok) == [1, 107, tok.eos_token_id]
    model.generation_config.eos_token_id = tok.eos_token_id
    assert stop_tokens(model, tok) == [tok.eos_token_id]
