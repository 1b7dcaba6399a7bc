#!/usr/bin/env bash
# Serves TensorBoard for a run directory (local path or gs://) on http://localhost:6006.
# Usage: bash experiments/tpu/tensorboard.sh gs://bucket/runs/r1
set -euo pipefail
LOGDIR=${1:?usage: tensorboard.sh WORKDIR}
exec tensorboard --logdir "$LOGDIR" --port 6006 --bind_all
