"""End to end: the ``causal-lm`` task through the ``vectorfit`` command (train with every method, --resume, evaluate,
generate, merge), on tiny random GPT-2 and Llama models with an offline word-level tokenizer saved to temp dirs."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from vf_backends_nlp.testing import CHAT_TEMPLATE, save_tiny_causal_lm  # noqa: E402

from vectorfit import main  # noqa: E402

NUMS = "one two three four five six seven eight nine ten".split()
FAST = ["--max-train", "16", "--max-eval", "6", "--batch-size", "4", "--max-length", "24", "--no-progress",
        "--logging-steps", "1"]
AVF = ["--avf-t-i", "1", "--avf-t-f", "1", "--avf-n-f", "2", "--avf-k", "2"]
#: the brief's minimum runs always; the other methods are marked slow (deselect with -m 'not slow')
METHODS = ["vectorfit", "full", "lora", *(pytest.param(m, marks=pytest.mark.slow)
                                          for m in ("svfit", "svft", "bitfit", "adalora"))]


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("clm")
    rng = random.Random(0)
    pairs = [(a, rng.choice(NUMS)) for a in NUMS for _ in range(3)]
    return {
        "gpt2": save_tiny_causal_lm(d / "gpt2", "gpt2", pad=False),      # no pad token (EOS pads), no chat template
        "llama": save_tiny_causal_lm(d / "llama", "llama", chat_template=CHAT_TEMPLATE),
        "pc": _jsonl(d / "pc.jsonl", [{"prompt": f"what is {a} plus {b} ?", "completion": f"{a} plus {b} ."}
                                      for a, b in pairs]),
        "chat": _jsonl(d / "chat.jsonl", [{"messages": [{"role": "user", "content": f"say {a}"},
                                                        {"role": "assistant", "content": f"{a} {b} ."}]}
                                           for a, b in pairs]),
    }


def _train(out: Path, model, data, *extra) -> dict:
    code = main(["train", "--model", str(model), "--data", str(data), "--output", str(out), *FAST, *extra])
    assert code == 0
    return json.loads((out / "metrics.json").read_text())


def _consistent(metrics: dict) -> None:
    assert math.isfinite(metrics["eval_loss"]) and metrics["eval_tokens"] > 0
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]), rel=1e-9)
    assert metrics["primary_metric"] == "eval_perplexity"


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_gpt2_on_prompt_completion(assets, tmp_path, method):
    extra = ["--method", method, "--max-steps", "2", "--no-plots", "--no-checkpoints"]
    if method == "vectorfit":
        extra += AVF
    metrics = _train(tmp_path / method, assets["gpt2"], assets["pc"], *extra)  # no --task: recognised
    _consistent(metrics)
    run = json.loads((tmp_path / method / "run.json").read_text())
    assert run["task_name"] == "causal-lm" and run["data_format"]["kind"] == "prompt-completion"
    assert metrics["train_steps"] == 2 and 0 < metrics["trainable_params"] <= metrics["total_params"]
    assert (tmp_path / method / ("model" if method == "full" else "adapter")).is_dir()
    if method == "vectorfit":
        assert json.loads((tmp_path / method / "avf_history.json").read_text())["history"]


@pytest.fixture(scope="module")
def chat_run(assets, tmp_path_factory) -> Path:
    """A VectorFit run with AVF on the tiny Llama's chats, 1 epoch (4 steps), checkpointed."""
    out = tmp_path_factory.mktemp("runs") / "chat"
    _train(out, assets["llama"], assets["chat"], "--task", "causal-lm", "--epochs", "1", "--lr", "3e-2", *AVF)
    return out


def test_chat_run_resumes_and_evaluates(chat_run, capsys):
    metrics = json.loads((chat_run / "metrics.json").read_text())
    _consistent(metrics)
    assert metrics["train_steps"] == 4 and (chat_run / "plots" / "training_strength.png").is_file()
    run = json.loads((chat_run / "run.json").read_text())
    assert run["data_format"] == {"kind": "messages", "columns": {"messages": "messages"}}
    capsys.readouterr()
    assert main(["evaluate", str(chat_run)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-5)
    assert evaluated["eval_tokens"] == metrics["eval_tokens"] and evaluated["num_examples"] == 6
    # the command's --max-length, not the run's: chats cut shorter score fewer tokens
    assert main(["evaluate", str(chat_run), "--max-length", "6"]) == 0
    assert 0 < json.loads(capsys.readouterr().out)["eval_tokens"] < metrics["eval_tokens"]


def test_resume_continues_from_the_checkpoint(assets, tmp_path):
    out = tmp_path / "resume"
    first = _train(out, assets["llama"], assets["pc"], "--epochs", "1", "--no-plots", *AVF)
    assert main(["train", "--output", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["train_steps"] == 2 * first["train_steps"]
    assert resumed["resumed_from"].endswith(f"checkpoint-{first['train_steps']}")
    _consistent(resumed)


def _generate(target, *extra, capsys) -> list[str]:
    capsys.readouterr()
    assert main(["generate", str(target), "--prompt", "say three", "--prompt", "say one plus two",
                 "--max-new-tokens", "6", "--json", *extra]) == 0
    return [row["generation"] for row in json.loads(capsys.readouterr().out)]


def test_generate_adapter_and_merged_give_the_same_greedy_text(chat_run, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from_run = _generate(chat_run, capsys=capsys)
    assert len(from_run) == 2 and all(isinstance(t, str) and t for t in from_run)
    merged = tmp_path / "merged"
    assert main(["merge", str(chat_run), "--output", str(merged)]) == 0
    assert _generate(merged, capsys=capsys) == from_run  # the chat template is used for the merged model too
    # a plain transformers model: from_pretrained and generate, the same tokens
    model = AutoModelForCausalLM.from_pretrained(merged)
    tok = AutoTokenizer.from_pretrained(merged)
    text = tok.apply_chat_template([{"role": "user", "content": "say three"}], tokenize=False,
                                   add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip() == from_run[0]
    # beams and sampling run; a seed makes sampling repeatable
    assert len(_generate(chat_run, "--num-beams", "2", capsys=capsys)) == 2
    sampled = _generate(chat_run, "--temperature", "1.5", "--seed", "3", capsys=capsys)
    assert _generate(chat_run, "--temperature", "1.5", "--seed", "3", capsys=capsys) == sampled


def test_lora_run_generates_and_merges(assets, tmp_path, capsys):
    out = tmp_path / "lora"
    _train(out, assets["gpt2"], assets["pc"], "--method", "lora", "--max-steps", "1", "--no-plots", "--lr", "5e-2",
           "--no-checkpoints")
    from_run = _generate(out, capsys=capsys)
    merged = tmp_path / "merged"
    assert main(["merge", str(out), "--output", str(merged)]) == 0
    assert _generate(merged, capsys=capsys) == from_run


# ------------------------------------------------------------------------------------------------ bad input
def _error(capsys, *argv) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vectorfit: error:") and "\n" not in err, err
    return err


def test_missing_columns_is_one_line(assets, tmp_path, capsys):
    data = _jsonl(tmp_path / "qa.jsonl", [{"question": "what is one ?", "answer": "one"}] * 8)
    err = _error(capsys, "train", "--task", "causal-lm", "--model", str(assets["llama"]), "--data", str(data),
                 "--output", str(tmp_path / "out"))
    assert "question, answer" in err and "--prompt-column" in err and "--text-column" in err


def test_chat_data_needs_a_chat_template(assets, tmp_path, capsys):
    err = _error(capsys, "train", "--model", str(assets["gpt2"]), "--data", str(assets["chat"]),
                 "--output", str(tmp_path / "out"), *FAST)
    assert "chat template" in err and "prompt/completion or text" in err


def test_a_model_without_a_causal_lm_head_is_refused(assets, tmp_path, capsys):
    from transformers import BertConfig, BertModel

    bert = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=64)).save_pretrained(bert)
    (bert / "tokenizer.json").write_text((Path(assets["llama"]) / "tokenizer.json").read_text())
    (bert / "tokenizer_config.json").write_text((Path(assets["llama"]) / "tokenizer_config.json").read_text())
    err = _error(capsys, "train", "--task", "causal-lm", "--model", str(bert), "--data", str(assets["pc"]),
                 "--output", str(tmp_path / "out"))
    assert "causal-lm" in err
    from vf_backends_nlp.causal_lm_runner import load_causal_lm
    from vf_core.errors import TaskError

    with pytest.raises(TaskError, match="BertModel, without a causal language-model head"):
        load_causal_lm(str(bert))


def test_a_finished_run_is_not_written_over(chat_run, assets, capsys):
    before = {p: p.stat().st_mtime_ns for p in chat_run.rglob("*") if p.is_file()}
    err = _error(capsys, "train", "--model", str(assets["llama"]), "--data", str(assets["pc"]),
                 "--output", str(chat_run), *FAST)
    assert "already holds a finished run" in err
    assert {p: p.stat().st_mtime_ns for p in chat_run.rglob("*") if p.is_file()} == before


def test_text_data_through_a_datasets_folder(assets, tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    datasets.Dataset.from_list([{"text": f"the {a} cat sat on the {b} mat ."} for a in NUMS for b in NUMS[:3]]) \
        .save_to_disk(str(folder))
    metrics = _train(tmp_path / "text", assets["llama"], folder, "--method", "full", "--max-steps", "2",
                     "--no-plots", "--no-checkpoints")
    _consistent(metrics)
    assert torch.isfinite(torch.tensor(metrics["train_loss"]))


def test_prompts_longer_than_max_length_are_cut_from_the_left_with_one_warning_line(assets, tmp_path):
    """The user sees the count of cut examples on stderr, as one `vectorfit: warning:` line, even though the
    command silences the libraries' own warnings (a subprocess: pytest would catch the warning itself)."""
    import subprocess
    import sys

    long_rows = [{"prompt": " ".join(["one"] * 30) + " ?", "completion": "two ."} for _ in range(8)]
    data = _jsonl(tmp_path / "long.jsonl", long_rows)
    proc = subprocess.run([sys.executable, "-m", "vectorfit", "train", "--model", str(assets["gpt2"]), "--data",
                           str(data), "--output", str(tmp_path / "run"), *FAST, "--max-length", "12", "--max-steps",
                           "1", "--no-plots", "--no-checkpoints", "--max-train", "6", "--max-eval", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("vectorfit: warning:")]
    assert any("train data: 6 of 6 examples are longer than --max-length 12" in line
               and "prompts cut from the left" in line for line in lines), proc.stderr


def test_hub_ids_in_the_local_cache_are_recognised_by_their_config(assets, tmp_path, monkeypatch):
    """A hub id the cache holds picks its task from its cached config.json, as its local folder would: a causal
    LM is causal-lm, a seq2seq model seq2seq, without --task; an id the cache lacks stays unsure of every task."""
    from vf_core.testing.hub_cache import lay_out_hub_cache
    from vf_core.tasks import MAYBE

    from vectorfit.selection import choose_task, list_tasks

    hub = tmp_path / "hub"
    lay_out_hub_cache(assets["llama"], hub, "toy/tiny-llama")
    bart = tmp_path / "bart"
    bart.mkdir()
    (bart / "config.json").write_text(json.dumps({"model_type": "bart", "is_encoder_decoder": True,
                                                  "architectures": ["BartForConditionalGeneration"]}))
    lay_out_hub_cache(bart, hub, "toy/tiny-bart")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    tasks = list_tasks()
    assert choose_task(tasks, "toy/tiny-llama", data=str(assets["pc"]))[0].name == "causal-lm"
    assert choose_task(tasks, "toy/tiny-llama", data=str(tmp_path / "body.csv"))[0].name == "causal-lm"
    assert choose_task(tasks, "toy/tiny-bart")[0].name == "seq2seq"
    assert all(t.claim_model("toy/not-cached") == MAYBE for t in tasks.values() if t.backend == "nlp")
    metrics = _train(tmp_path / "run", "toy/tiny-llama", assets["pc"], "--max-steps", "1", "--no-plots",
                     "--no-checkpoints")
    _consistent(metrics)
