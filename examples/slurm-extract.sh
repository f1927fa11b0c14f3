#!/bin/bash
# `pipeline extract` as a Slurm job array: every array task is one worker on one GPU, all
# sharing one feature set through a PostgreSQL server. Tasks need no index to split the work:
# they claim shards from the server's queue, so the array size is just how many workers
# run. A task that is killed (preempted, node lost) loses only the shard it held; after
# --shard-timeout seconds another task takes it. Requeued or late tasks simply join in, and
# every task exits 0 once the whole feature set is complete.
#
#   export PIPELINE_DB='postgres://pipeline@db.internal:5432/pipeline'   # password in ~/.pgpass
#   sbatch examples/slurm-extract.sh
#   npx pipeline cache --db "$PIPELINE_DB"          # shards done/running/waiting/failed, workers, images/s
#
#SBATCH --job-name=pipeline-extract
#SBATCH --array=0-7
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=8G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --output=logs/extract-%A_%a.out

set -euo pipefail
: "${PIPELINE_DB:?set PIPELINE_DB to a postgres:// URL}"
cd "${PIPELINE_HOME:-$SLURM_SUBMIT_DIR}"

# Tasks hash the dataset one at a time (a lock on the server): the first reads every file,
# the others reuse its hashes.
srun npx pipeline extract \
  --db "$PIPELINE_DB" \
  --data /shared/photos \
  --backend onnx-cuda \
  --batch 64 \
  --concurrency "$SLURM_CPUS_PER_TASK" \
  --shard-size 1000 \
  --shard-timeout 900
