#!/usr/bin/env bash
# Run every benchmark against one bundle on a quiet machine; results land in bench/results/*.json.
#   bench/run_all.sh [BUNDLE] [DATASET]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/default}
DATA=${2:-}          # optional labelled dataset: adds each export's test-split accuracy
.venv/bin/python bench/latency.py --model "$MODEL"
.venv/bin/python bench/cold_start.py --model "$MODEL"
.venv/bin/python bench/cli.py --model "$MODEL"
.venv/bin/python bench/throughput.py --model "$MODEL"
.venv/bin/python bench/memory.py --model "$MODEL"
.venv/bin/python bench/tflite.py --model "$MODEL" ${DATA:+--data "$DATA"}
.venv/bin/python bench/report.py --model "$MODEL"
.venv/bin/python bench/table.py
