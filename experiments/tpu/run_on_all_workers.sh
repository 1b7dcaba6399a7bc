#!/usr/bin/env bash
# Runs the same training command on every worker of a TPU pod slice.
# Every host must run it: each reads its own shard of the data
# (grain ShardByJaxProcess) and jax.distributed.initialize() joins them.
# WORKDIR must be shared storage (a gs:// bucket) so all hosts checkpoint to it;
# DATA_DIR too (each host reads its local mirror of it). tests/test_storage_remote.py
# runs the same command, two processes on one gs:// workdir, against a fake server.
# Usage: TPU_NAME=mmj ZONE=us-central2-b CONFIG=configs/regression.py \
#        WORKDIR=gs://bucket/runs/r1 DATA_DIR=gs://bucket/tfds bash experiments/tpu/run_on_all_workers.sh
set -euo pipefail
: "${TPU_NAME:?}" "${ZONE:?}" "${CONFIG:?}" "${WORKDIR:?}" "${DATA_DIR:?set DATA_DIR=gs://bucket/tfds}"
EXTRA=${EXTRA:-}
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  cd multimodal_jax && . .venv/bin/activate
  nohup python -m multimodal_jax.main --distributed --config=$CONFIG --workdir=$WORKDIR \
    --config.data.data_dir=$DATA_DIR $EXTRA > train.log 2>&1 &
"
echo "Started on all workers; logs: gcloud compute tpus tpu-vm ssh $TPU_NAME --zone $ZONE --worker=0 --command 'tail -f multimodal_jax/train.log'"
