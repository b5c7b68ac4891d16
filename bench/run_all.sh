#!/usr/bin/env bash
# Run every benchmark against one bundle; results land in bench/results/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/default}
.venv/bin/python bench/latency.py --model "$MODEL"
.venv/bin/python bench/cold_start.py --model "$MODEL"
.venv/bin/python bench/throughput.py --model "$MODEL"
.venv/bin/python bench/memory.py --model "$MODEL"
.venv/bin/python bench/tflite.py --model "$MODEL"
