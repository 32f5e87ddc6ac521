#!/usr/bin/env bash
# Create .venv (if needed) and install every VectorFit package, editable, with the test tools: the library and the
# backends under packages/, then the application (the root distribution: src/vectorfit, the `vectorfit` command).
# Torch comes first and pinned: this machine's pip takes the matching torch/torchvision pair from its wheel folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q \
  -e packages/vf-core \
  -e packages/vf-avf \
  -e "packages/vf-backends-nlp[transformers,datasets]" \
  -e "packages/vf-backends-vision[timm]" \
  -e "packages/vf-backends-diffusion[diffusers]" \
  -e ".[dev]"
python -c "import vf_core, vf_avf, vf_backends_nlp, vectorfit; print('vectorfit installed:', vectorfit.__version__)"
