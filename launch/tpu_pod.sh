#!/usr/bin/env bash
# Runs an experiment on every worker of a Cloud TPU VM pod slice.
#
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a launch/tpu_pod.sh \
#       --config=experiments/t1_language_modeling.py:model=mac,size=760M --workdir=gs://BUCKET/titans/mac760m
#
# Every worker installs this checkout (synced with scp first) and runs the same
# command; jax.distributed.initialize() finds the pod's coordinator itself. The
# workdir must be shared (a gs:// bucket) so Orbax checkpoints are visible to all.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU zone}"
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
REPO_DIR=${REPO_DIR:-titans_jax}
here=$(cd "$(dirname "$0")/.." && pwd)

gcloud compute tpus tpu-vm scp --recurse "$here" "$TPU_NAME:~/$REPO_DIR" \
  --zone="$ZONE" --worker=all $PROJECT_FLAG
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all $PROJECT_FLAG --command="
  set -e
  cd ~/$REPO_DIR
  python3 -m pip install -q -e . 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  python3 -m titans_jax.main --distributed $*
"
