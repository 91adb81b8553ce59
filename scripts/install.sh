#!/usr/bin/env bash
# Set up bertkit in ./.venv on a fresh machine: PyTorch (CPU wheel unless an NVIDIA GPU is present), then the
# project with its dev tools. Safe to re-run. Usage: bash scripts/install.sh [python-executable]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-${PYTHON:-python3}}"
VENV="${VENV:-.venv}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[install] NVIDIA GPU found: installing the CUDA build of torch==$TORCH_VERSION from PyPI"
    $PIP install "torch==$TORCH_VERSION"
  else
    # No GPU: never let a bare 'torch' requirement pull a multi-GB CUDA build. PyTorch's CPU index first;
    # offline mirrors with a local CPU wheel (pip find-links) are used when that index is unreachable.
    echo "[install] no GPU: installing the CPU build of torch==$TORCH_VERSION"
    $PIP install "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu \
      --retries 0 --timeout 10 \
      || $PIP install "torch==$TORCH_VERSION"
  fi
fi

# the project and its dev tools; torch is already satisfied, so nothing else large is pulled in
$PIP install -e ".[dev]"
"$VENV/bin/python" -c "import torch, bertkit; print('[install] bertkit', bertkit.__version__, '| torch', torch.__version__, '| cuda' if torch.cuda.is_available() else '| cpu')"
