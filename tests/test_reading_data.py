"""The generation benchmark's reading data (benchmarks/generation/reading.py) and the seq2seq base's denoising
(seq2seq_base.py): the cast read off a synopsis, the SQuAD rows' answer offsets, the held-out split, BART's text
infilling. Pure functions on hand-written text: nothing is downloaded or trained."""

from __future__ import annotations

import random
import sys

import pytest

from vectorfit_test_utils import REPO

sys.path.insert(0, str(REPO / "benchmarks" / "generation"))
reading = pytest.importorskip("reading")
seq2seq_base = pytest.importorskip("seq2seq_base")

SYNOPSIS = ("Cathy (Julianne Moore) is the perfect 50s housewife. One night she surprises her husband Frank (Dennis"
            " Quaid) with another man. In The (Big City) she meets Raymond (Dennis Haysbert), then Frank (Dennis"
            " Quaid) again.")


def test_cast_reads_character_actor_pairs_in_order_first_mention_per_actor():
    cast = reading.cast(SYNOPSIS)
    assert [(c, a) for c, _, a, _ in cast] == [("Cathy", "Julianne Moore"), ("Frank", "Dennis Quaid"),
                                               ("Raymond", "Dennis Haysbert")]  # "In The (Big City)" is no cast
    for character, c_at, actor, a_at in cast:
        assert SYNOPSIS[c_at:].startswith(character) and SYNOPSIS[a_at:].startswith(actor)
    assert reading.cast_list(SYNOPSIS) == "Julianne Moore as Cathy; Dennis Quaid as Frank; Dennis Haysbert as Raymond"


def test_questions_are_squad_rows_whose_answer_sits_at_its_offset():
    rows = reading.questions("far_from_heaven", SYNOPSIS)
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6
    for r in rows:
        text, start = r["answers"]["text"][0], r["answers"]["answer_start"][0]
        assert r["context"][start:start + len(text)] == text
    assert {r["question"]: r["answers"]["text"][0] for r in rows}["Who plays Frank?"] == "Dennis Quaid"


def test_a_character_cast_twice_gets_no_who_plays_question():
    text = "John (Ann Lee) and John (Bo Ray) meet."
    questions = [r["question"] for r in reading.questions("x", text)]
    assert "Who plays John?" not in questions
    assert questions == ["Which character does Ann Lee play?", "Which character does Bo Ray play?"]


def test_held_out_films_are_a_fixed_share_by_seed():
    films = [f"film{i}" for i in range(100)] * 2
    held = reading.held_out(films)
    assert len(held) == 15 and held == reading.held_out(films)
    assert held != reading.held_out(films, seed=1)


def test_infilling_masks_about_the_share_in_spans_and_keeps_the_rest_in_order():
    ids = list(range(10, 210))
    out = seq2seq_base.infill(ids, mask_id=0, rng=random.Random(0))
    kept = [t for t in out if t != 0]
    assert kept == sorted(kept) and set(kept) <= set(ids)  # order kept, nothing invented
    assert 0.15 <= 1 - len(kept) / len(ids) <= 0.3  # at most the budget, in spans of 1-5
    assert out.count(0) * 5 >= len(ids) - len(kept)
