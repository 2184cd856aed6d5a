#!/bin/bash
# The accelerator figures of the README's "On a GPU" table, in one run:
#   1. ResNet-50 (configs/imagenet_resnet50.py, RigL ERK 90%): the train step
#      as main.py runs it, dense vs RigL (images/s, the ratio, what a mask
#      update adds), batch 256 on one device;
#   2. benchmarks/sparse_step.py: the benchmark MLP's step as users call it,
#      and masked_init / the RigL, SET and SNFS mask updates on the
#      ResNet-50-sized tree;
#   3. the transformer configs (lm1b_transformer, imagenet_vit_b16; RigL ERK
#      90%): the same as 1 (tokens/s, images/s).
# Each part is one process under its own time limit, so a part that fails
# or runs long leaves the others' figures. Logs and JSON go to OUTDIR.
# On an H200 the parts took ~150 s, over 170 s (SET's and SNFS's mask
# updates on the ResNet-50 tree compile slowly) and 116 s: give the whole
# ten minutes, or run the parts in separate calls
# (benchmarks/results/2026-12-04-h200/README.md).
#
# Usage: benchmarks/gpu_figures.sh OUTDIR   (PYTHON=... to pick the
# interpreter; T=seconds per part, default 200)
set -u
out=${1:-/tmp/gpu_figures}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
limit=${T:-200}
date -u
$py -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null

part() {
  local name=$1
  shift
  echo "=== $name"
  local t0=$SECONDS
  timeout "$limit" "$py" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.log"
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
}

sparse=method=rigl,dist=erk,sparsity=0.9
part resnet50 benchmarks/train_step.py --rounds 6 --repeats 4 \
  --config "configs/imagenet_resnet50.py:$sparse" --batch 256 \
  --json "$out/resnet50.json"
part sparse_step benchmarks/sparse_step.py --methods static,rigl \
  --rounds 10 --repeats 10
part transformers benchmarks/train_step.py --rounds 10 --repeats 5 \
  --config "configs/lm1b_transformer.py:$sparse" --batch 256 \
  --config "configs/imagenet_vit_b16.py:$sparse" --batch 256 \
  --json "$out/transformers.json"
