#!/usr/bin/env bash
# Creates a Cloud TPU VM (pod slice) and installs multimodal_jax on every worker.
# Usage: TPU_NAME=mmj ZONE=us-central2-b ACCELERATOR=v4-32 bash experiments/tpu/create_tpu_vm.sh
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${ACCELERATOR:=v4-8}" "${RUNTIME:=tpu-ubuntu2204-base}"
REPO_URL=${REPO_URL:?set REPO_URL to a git URL of this repository}

gcloud compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" \
  --accelerator-type "$ACCELERATOR" --version "$RUNTIME"

gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e
  git clone $REPO_URL multimodal_jax || (cd multimodal_jax && git pull)
  cd multimodal_jax
  python3 -m venv .venv && . .venv/bin/activate
  pip install -q -e '.[gcs]' && pip install -q 'jax[tpu]==0.10.2'
"
