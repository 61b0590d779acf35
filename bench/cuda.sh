#!/bin/bash
# The GPU checks as one prepared run, for a session lent a GPU (the `device` tool runs it in the
# repository root with a fresh $OUT folder; nothing outside that machine is reachable, so peers
# not installed there are left out of the tables by the scripts themselves):
#
#   bash bench/cuda.sh            # CUDA-marked tests, the white-box, robust-accuracy and audit-cost
#                                 # benchmarks on cuda; results in $OUT (default bench/results)
#
# Copy the figures into docs/benchmarks.md beside the CPU ones.
set -euo pipefail
out=${OUT:-bench/results}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/cuda-device.txt"
python -m pytest -m cuda -q -rs -p no:cacheprovider 2>&1 | tee "$out/cuda-tests.txt"
python bench/whitebox.py --n 1000 --device cuda --out "$out/whitebox-cuda.json" \
    --skip-peer "C&W:ART" 2>&1 | tail -40 | tee "$out/whitebox-cuda.txt"
python bench/robust_accuracy.py --n 1000 --device cuda --out "$out/robust_accuracy-cuda.json" \
    2>&1 | tail -40 | tee "$out/robust_accuracy-cuda.txt"
# The full audit's cost per image at 224 on the GPU (the stand-in ResNet-18; its folder of photos
# is made from scikit-image's pictures on the spot).
python bench/audit_cost.py --root /tmp/rl-imagenet --device cuda \
    --out "$out/audit-cost-224-cuda.json" 2>&1 | tail -20 | tee "$out/audit-cost-224-cuda.txt"
