#!/bin/sh
# Runs every evidence sweep, one process at a time, at the lowest priority.
# Restartable: finished runs are skipped. Order: Fashion-MNIST 1x grid
# (3 seeds), RigL/Static 2x with ERK, the Shakespeare LSTM seed 0,
# RigL/Static 2x with uniform, the IMP and CS ticket searches, Shakespeare
# seeds 1-2, the Shakespeare transformer (seed by seed) and its scanned vs
# unrolled pair. Then: python experiments/make_report.py and
# python experiments/compare_layouts.py
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
R=experiments/results
FM=configs/evidence_fashion_mnist.py
SH=configs/evidence_shakespeare.py
run() { nice -n 19 "$PY" experiments/run_evidence.py "$@"; }
run --config $FM --root $R/fashion_mnist --sweep grid
run --config $FM --root $R/fashion_mnist --sweep long_erk
run --config $SH --root $R/shakespeare --sweep seed0
run --config $FM --root $R/fashion_mnist --sweep long_uniform
run --config configs/evidence_tickets.py:imp --root $R/fashion_mnist/tickets_imp
run --config configs/evidence_tickets.py:cs --root $R/fashion_mnist/tickets_cs
run --config $SH --root $R/shakespeare
TR=configs/evidence_transformer.py
run --config $TR --root $R/transformer
run --config $TR --root experiments/layout --sweep layout --keep_checkpoints
