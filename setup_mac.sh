#!/usr/bin/env bash
# Set up fedspec in ./.venv on macOS (MPS) or Linux (CUDA if an NVIDIA driver is present, else CPU).
#   bash setup_mac.sh          the package, the right torch, the offline text tasks
#   bash setup_mac.sh --dev    the same plus the test tools
# FEDSPEC_TORCH="torch==X" installs exactly that torch instead (CI pins torch==2.13.0 this way).
set -euo pipefail
cd "$(dirname "$0")"

extras="text"
if [ "${1:-}" = "--dev" ]; then extras="text,dev"; fi

py="${PYTHON:-python3}"
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "error: fedspec needs Python 3.10 or newer ($py is $("$py" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip)
"${pip[@]}" install --quiet --upgrade pip

if [ -n "${FEDSPEC_TORCH:-}" ]; then
  "${pip[@]}" install --quiet "$FEDSPEC_TORCH"
elif [ "$(uname -s)" = "Darwin" ]; then
  "${pip[@]}" install --quiet torch              # macOS wheels include MPS
elif command -v nvidia-smi >/dev/null 2>&1; then
  "${pip[@]}" install --quiet torch              # Linux wheels on PyPI are CUDA builds
else
  "${pip[@]}" install --quiet torch --index-url https://download.pytorch.org/whl/cpu
fi
"${pip[@]}" install --quiet -e ".[${extras}]"

.venv/bin/python - <<'PY'
import torch
mps = getattr(torch.backends, "mps", None)
dev = "cuda" if torch.cuda.is_available() else "mps" if mps is not None and mps.is_available() else "cpu"
print(f"fedspec ready: torch {torch.__version__}, training device: {dev}")
PY
