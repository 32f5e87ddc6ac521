"""Hub model ids (``org/name[@revision]``) resolved through huggingface_hub from a local cache laid out the way
the hub lays it out, offline: the packaged all-MiniLM-L6-v2 as ``sentence-transformers/all-MiniLM-L6-v2``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vf_core.hub import parse_hub_id
from vf_backends_nlp.models import MODEL_ASSETS, load_text_classifier, resolve_model_dir
from vf_core.assets import DataError, fetch
from vf_core.testing.hub_cache import TEST_COMMIT as COMMIT
from vf_core.testing.hub_cache import lay_out_hub_cache

@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    hub = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub


def test_parse_hub_id():
    assert parse_hub_id("org/name") == ("org/name", None)
    assert parse_hub_id("org/name@v1.0") == ("org/name", "v1.0")
    assert parse_hub_id("minilm") is None and parse_hub_id("a/b/c") is None and parse_hub_id("/abs/path") is None


def test_packaged_minilm_from_a_hub_cache(offline_hub):
    snapshot = lay_out_hub_cache(fetch(MODEL_ASSETS["minilm"]), offline_hub, "sentence-transformers/all-MiniLM-L6-v2")
    for spec in ("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2@main",
                 f"sentence-transformers/all-MiniLM-L6-v2@{COMMIT}"):
        assert resolve_model_dir(spec) == snapshot
    model, tokenizer = load_text_classifier("sentence-transformers/all-MiniLM-L6-v2", num_labels=2)
    assert model.config.hidden_size == 384 and tokenizer("a review")["input_ids"][0] == tokenizer.cls_token_id


def test_missing_model_offline_is_one_clear_error(offline_hub):
    with pytest.raises(DataError, match=r"not in the local Hugging Face cache .* HF_HUB_OFFLINE=1"):
        resolve_model_dir("nobody/no-such-model")
    with pytest.raises(DataError, match="neither a local directory, a built-in alias"):
        resolve_model_dir("not a model")


def test_unknown_revision_offline(offline_hub):
    lay_out_hub_cache(fetch(MODEL_ASSETS["minilm"]), offline_hub, "org/mini")
    with pytest.raises(DataError, match="org/mini@v9"):
        resolve_model_dir("org/mini@v9")


def test_a_local_folder_wins_over_a_hub_id(tmp_path, monkeypatch, offline_hub):
    local = tmp_path / "org" / "name"
    shutil.copytree(fetch(MODEL_ASSETS["minilm"]), local)
    monkeypatch.chdir(tmp_path)
    assert resolve_model_dir("org/name") == Path("org/name")


def test_online_a_model_missing_from_the_cache_is_downloaded(tmp_path, monkeypatch):
    """Without HF_HUB_OFFLINE the cache is tried first, then the hub; loading a local model never turns the
    hub off for the rest of the process (it used to set HF_HUB_OFFLINE=1)."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    calls = []

    def fake_snapshot_download(repo_id, revision=None, cache_dir=None, local_files_only=False):
        calls.append(local_files_only)
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        return str(fetch(MODEL_ASSETS["minilm"]))  # stands in for the downloaded snapshot

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    load_text_classifier("minilm", num_labels=2)  # a local load first
    assert "HF_HUB_OFFLINE" not in os.environ
    assert resolve_model_dir("someone/new-model") == fetch(MODEL_ASSETS["minilm"])
    assert calls == [True, False]
