#!/usr/bin/env bash
# Runs an experiment on every worker of a Cloud TPU VM pod slice.
#
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a MOUNT_BUCKET=BUCKET launch/tpu_pod.sh \
#       --config=experiments/t1_language_modeling.py:model=mac,size=760M --workdir=/gcs/BUCKET/titans/mac760m
#
# Every worker installs this checkout (synced with scp first) and runs the same
# command; jax.distributed.initialize() finds the pod's coordinator itself. The
# workdir must be one folder shared by all workers, given as a path (a gs:// URL is
# refused): MOUNT_BUCKET=BUCKET mounts gs://BUCKET at /gcs/BUCKET on every worker with
# gcsfuse first (it must be installed there); an NFS share (Filestore) works as well.
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
  if [ -n \"${MOUNT_BUCKET:-}\" ] && ! mountpoint -q /gcs/${MOUNT_BUCKET:-none}; then
    command -v gcsfuse >/dev/null || { echo 'gcsfuse is not installed on this worker; see https://cloud.google.com/storage/docs/gcsfuse-install' >&2; exit 1; }
    sudo mkdir -p /gcs/${MOUNT_BUCKET:-none} && sudo chown \$(id -u) /gcs/${MOUNT_BUCKET:-none}
    gcsfuse --implicit-dirs ${MOUNT_BUCKET:-none} /gcs/${MOUNT_BUCKET:-none}
  fi
  python3 -m pip install -q -e . 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  python3 -m titans_jax.main --distributed $*
"
