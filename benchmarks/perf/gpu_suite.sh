#!/usr/bin/env bash
# The GPU suite in one command (see gpu_suite.py): at most 8 minutes on one H100/H200.
#   bash benchmarks/perf/gpu_suite.sh              # JSON lines on stdout, table in results/gpu_suite.md
#   bash benchmarks/perf/gpu_suite.sh --smoke      # CPU, toy sizes
# Uses .venv/bin/python when present (make setup), else python3; extra arguments go to gpu_suite.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python="python3"; fi
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
cd "$here"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
# 470 s hard stop: the suite stops starting cases after --budget-s (420 s by default)
exec timeout --signal=INT 470 "$python" gpu_suite.py "$@"
