#!/usr/bin/env bash
# Install everything into .venv, then run the whole test suite (all packages, tiny models, no model hub).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m pytest "$@"
