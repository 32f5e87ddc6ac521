"""The options the text backend's generating and question-answering tasks add to ``vectorfit train``.

Cheap to import (argparse only). ``causal-lm`` and ``seq2seq`` share :func:`generation_arguments` (added once);
``question-answering`` has :func:`qa_arguments`. Classification's own options (``--max-length``, ``--split``,
``--pooling``...) live in :mod:`vf_backends_nlp.tasks` and apply to every text task where they make sense
(``--max-length`` bounds every tokenised input).
"""

from __future__ import annotations

__all__ = ["generation_arguments", "qa_arguments", "DEFAULT_MAX_NEW_TOKENS"]

#: tokens generated at most when neither ``vectorfit train`` nor ``vectorfit generate`` says
DEFAULT_MAX_NEW_TOKENS = 64


def generation_arguments(group) -> None:
    """``causal-lm`` and ``seq2seq`` options: data columns and generation settings."""
    group.add_argument("--prompt-column", metavar="COL",
                       help="causal-lm: the prompt column of prompt/completion data (default: prompt); the loss is on"
                       " the completion only")
    group.add_argument("--completion-column", metavar="COL",
                       help="causal-lm: the completion column (default: completion)")
    group.add_argument("--messages-column", metavar="COL",
                       help="causal-lm: the chat column, a list of {role, content} (default: messages); rendered with"
                       " the tokenizer's chat template, the loss on the assistant turns only")
    group.add_argument("--source-column", metavar="COL",
                       help="seq2seq: the input text column (default: source, then document, article, text)")
    group.add_argument("--target-column", metavar="COL",
                       help="seq2seq: the output text column (default: target, then summary, highlights)")
    group.add_argument("--max-target-length", type=int, default=None, metavar="N",
                       help="seq2seq: truncate targets to N tokens (default: --max-new-tokens)")
    group.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                       help=f"causal-lm/seq2seq: tokens generated at most when scoring and by `vectorfit generate`"
                       f" (default {DEFAULT_MAX_NEW_TOKENS})")
    group.add_argument("--num-beams", type=int, default=None, metavar="B",
                       help="seq2seq: beam search width when scoring generations (default 1: greedy)")


def qa_arguments(group) -> None:
    """``question-answering`` options: how long contexts are split and answers read back."""
    group.add_argument("--doc-stride", type=int, default=128, metavar="N",
                       help="question-answering: tokens shared by consecutive windows of a long context")
    group.add_argument("--max-answer-length", type=int, default=30, metavar="N",
                       help="question-answering: longest answer, in tokens")
    group.add_argument("--n-best", type=int, default=20, metavar="N",
                       help="question-answering: start and end candidates considered per window")
    group.add_argument("--null-score-threshold", type=float, default=0.0, metavar="X",
                       help="question-answering (SQuAD v2): answer nothing when the no-answer score beats the best"
                       " span by more than X")
