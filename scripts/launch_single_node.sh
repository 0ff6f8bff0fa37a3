#!/usr/bin/env bash
# Pretrain on one machine with all its GPUs: one torchrun, one worker process per GPU (or 1 process on a CPU box).
#
#   scripts/launch_single_node.sh CONFIG [key=value ...]
#   scripts/launch_single_node.sh configs/pretrain/phase1-1k.yaml data.shards=shards/phase1 out=runs/phase1
#
# Environment (all optional):
#   NPROC        worker processes; default: the entries of CUDA_VISIBLE_DEVICES, else `nvidia-smi -L` lines, else 1
#   PYTHON       interpreter; default: the repository's .venv/bin/python, else python3
#   OMP_NUM_THREADS, WANDB_MODE, TORCH_ELASTIC_SHUTDOWN_TIMEOUT: kept when set (defaults below)
#
# Relative paths in CONFIG's overrides are relative to the repository root (the script runs from there). Stop a run
# with `kill -TERM <pid of this script>` (it becomes torchrun): every worker checkpoints at the end of its step and
# exits 0 (torchrun itself then exits 1, its way of saying it was signalled); rerunning the same command resumes
# from the newest complete checkpoint in <out>/ckpt.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/launch_single_node.sh CONFIG [key=value ...]

Pretrain on this machine's GPUs (torchrun, one process per GPU; one process on CPU).
example:
  scripts/launch_single_node.sh configs/pretrain/phase1-1k.yaml data.shards=shards/phase1 out=runs/phase1
  NPROC=2 scripts/launch_single_node.sh configs/pretrain/tiny.yaml data.shards=DIR data.tokenizer=DIR out=runs/t
USAGE
}

if [[ $# -eq 0 ]]; then
    usage >&2
    exit 2
fi
if [[ $1 == -h || $1 == --help ]]; then
    usage
    exit 0
fi

config=$1
shift
# The script cds to the repository root, so a config path given relative to the caller's folder is made absolute.
if [[ -f $config ]]; then
    config=$(cd "$(dirname "$config")" && pwd)/$(basename "$config")
fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if [[ ! -f $config ]]; then
    echo "launch_single_node.sh: config not found: $config" >&2
    exit 2
fi

python=${PYTHON:-}
if [[ -z $python ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi

# One worker per visible GPU. CUDA_VISIBLE_DEVICES set but empty hides every GPU: a CPU run, one process.
if [[ -n ${NPROC:-} ]]; then
    nproc_per_node=$NPROC
elif [[ -n ${CUDA_VISIBLE_DEVICES+set} ]]; then
    IFS=, read -ra visible <<< "$CUDA_VISIBLE_DEVICES"
    nproc_per_node=${#visible[@]}
elif command -v nvidia-smi > /dev/null && gpus=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU'); then
    nproc_per_node=$gpus
else
    nproc_per_node=0
fi
if (( nproc_per_node < 1 )); then
    nproc_per_node=1
fi

# torchrun sets OMP_NUM_THREADS=1 for every worker when it is unset; on a CPU run that leaves most cores idle, and on
# a GPU run the host-side work (masking, collation) gets no threads at all. An even share of the cores is right for
# both; a user's own value is kept.
cores=$(nproc 2> /dev/null || getconf _NPROCESSORS_ONLN)
threads=$(( cores / nproc_per_node ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( threads > 0 ? threads : 1 ))}
# Offline by design (no hub look-ups; wandb writes locally unless the user opts in with WANDB_MODE=online), and no
# tokenizers thread pool that would be forked into workers.
export HF_HUB_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
export WANDB_MODE=${WANDB_MODE:-offline}
# On SIGTERM torchrun forwards the signal to the workers, then SIGKILLs any still running after this many seconds
# (torch's default: 30). A worker first finishes its step and writes a checkpoint, which can take minutes on a large
# model; a killed save is never resumed from, but the steps since the last one would be lost.
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-300}

echo "launch_single_node.sh: $nproc_per_node process(es), OMP_NUM_THREADS=$OMP_NUM_THREADS, config $config" >&2
# exec: a signal sent to this script's pid reaches torchrun itself (python -m torch.distributed.run is torchrun).
exec "$python" -m torch.distributed.run --standalone --nproc_per_node="$nproc_per_node" \
    -m cmbert.pretrain.train --config "$config" "$@"
