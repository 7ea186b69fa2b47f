#!/usr/bin/env bash
# Runs an experiment on N GPU hosts (one process per host, all local GPUs each).
#
# Under SLURM (jax.distributed.initialize() reads SLURM's variables):
#   srun --nodes=4 --ntasks-per-node=1 launch/gpu_multinode.sh --config=... --workdir=/shared/run
# Elsewhere, set the coordinator explicitly on every host:
#   COORDINATOR=host0:1234 NUM_PROCESSES=4 PROCESS_ID=<i> launch/gpu_multinode.sh --config=... --workdir=...
# The workdir must be on a file system every host sees.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${COORDINATOR:-}" ]]; then
  exec python3 -m titans_jax.main --coordinator_address="$COORDINATOR" \
    --num_processes="${NUM_PROCESSES:?}" --process_id="${PROCESS_ID:?}" "$@"
fi
exec python3 -m titans_jax.main --distributed "$@"
