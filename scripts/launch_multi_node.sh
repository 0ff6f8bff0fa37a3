#!/usr/bin/env bash
# Pretrain on several machines with DeepSpeed's launcher: it reads a hostfile, starts one launcher per host over ssh
# (pdsh), and each of those starts one worker per slot (GPU).
#
#   scripts/launch_multi_node.sh HOSTFILE CONFIG [key=value ...]
#   scripts/launch_multi_node.sh hostfile configs/pretrain/phase1-1k.yaml data.shards=shards/phase1 out=runs/phase1
#
# HOSTFILE (MPI style, DeepSpeed's format): one line per host, "NAME slots=GPUS"; '#' lines and blank lines are
# skipped; the first host is rank 0 and, by default, the rendezvous address.
#     worker-1 slots=8
#     worker-2 slots=8
#
# What the hosts need: passwordless ssh from this machine to every host (itself included), pdsh, and this repository
# with its .venv at the same path on all of them (a shared filesystem): each remote launcher cds to this folder and
# runs this same python. Data paths in the overrides must be readable from every host. DeepSpeed checks ssh to the
# first host even when the hostfile has only one (e.g. "localhost slots=2"): add DEEPSPEED_ARGS=--no_ssh_check there,
# or use scripts/launch_single_node.sh.
#
# Environment (all optional):
#   MASTER_ADDR      rendezvous host; default: the hostfile's first host
#   MASTER_PORT      rendezvous port; default: 29500
#   PYTHON           interpreter; default: the repository's .venv/bin/python, else python3
#   DEEPSPEED_ARGS   more launcher options, e.g. "--launcher openmpi" or "--ssh_port 2222 --include worker-1@worker-2"
#   OMP_NUM_THREADS, WANDB_MODE: kept when set (defaults below)
#
# Environment on the remote hosts: pdsh starts a fresh login shell there, so DeepSpeed forwards only variables named
# PYTHON*, NCCL*, UCX*, MLFLOW*, MV2* and those listed as NAME=VALUE lines in a `.deepspeed_env` file (read from ~
# and from the current folder, or the file DS_ENV_FILE names). This script writes such a file for OMP_NUM_THREADS,
# HF_HUB_OFFLINE, HF_DATASETS_OFFLINE, TOKENIZERS_PARALLELISM and WANDB_MODE, after the lines of your own
# ~/.deepspeed_env and ./.deepspeed_env (so those still apply; values set in this shell win). With a single host in
# the hostfile DeepSpeed starts the workers locally and they simply inherit this environment.
#
# Stopping: DeepSpeed's launchers give workers 30 s after SIGTERM before SIGKILL (not configurable in 0.19.8) and
# the pdsh runner answers Ctrl-C by killing the remote launchers. A run killed mid-save loses only the steps since its
# last complete checkpoint: rerunning the same command resumes from the newest complete one in <out>/ckpt.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/launch_multi_node.sh HOSTFILE CONFIG [key=value ...]

Pretrain on the hosts of HOSTFILE with DeepSpeed's launcher (pdsh over ssh, one process per slot).
HOSTFILE lines look like "worker-1 slots=8"; the first host is the rendezvous (MASTER_ADDR) unless set.
example:
  printf 'worker-1 slots=8\nworker-2 slots=8\n' > hostfile
  scripts/launch_multi_node.sh hostfile configs/pretrain/phase1-1k.yaml data.shards=shards/phase1 out=runs/phase1
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
if [[ $# -lt 2 ]]; then
    echo "launch_multi_node.sh: need a HOSTFILE and a CONFIG" >&2
    usage >&2
    exit 2
fi

# Both files are named relative to the caller's folder; the launch runs from the repository root.
absolute() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
hostfile=$1
config=$2
shift 2
for file in "$hostfile" "$config"; do
    if [[ ! -f $file ]]; then
        echo "launch_multi_node.sh: file not found: $file" >&2
        exit 2
    fi
done
hostfile=$(absolute "$hostfile")
config=$(absolute "$config")
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

python=${PYTHON:-}
if [[ -z $python ]]; then
    if [[ -x .venv/bin/python ]]; then python=$repo/.venv/bin/python; else python=python3; fi
fi

# The first host and the most slots on any host, read the way DeepSpeed reads the file ("NAME slots=N").
first_host=""
max_slots=1
while read -r name slots _; do
    [[ -z $name || $name == \#* ]] && continue
    [[ -z $first_host ]] && first_host=$name
    slots=${slots#slots=}
    if [[ $slots =~ ^[0-9]+$ ]] && (( slots > max_slots )); then
        max_slots=$slots
    fi
done < "$hostfile"
if [[ -z $first_host ]]; then
    echo "launch_multi_node.sh: no host in $hostfile (expected lines like 'worker-1 slots=8')" >&2
    exit 2
fi
master_addr=${MASTER_ADDR:-$first_host}
master_port=${MASTER_PORT:-29500}

# DeepSpeed's launcher, unlike torchrun, does not set OMP_NUM_THREADS: every worker would start one OpenMP thread
# per core and the workers of a host would oversubscribe it (measured 8x slower on CPU). An even share of this
# machine's cores per slot; the hosts are assumed alike (set OMP_NUM_THREADS yourself when launching from elsewhere).
cores=$(nproc 2> /dev/null || getconf _NPROCESSORS_ONLN)
threads=$(( cores / max_slots ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( threads > 0 ? threads : 1 ))}
# Offline by design (no hub look-ups; wandb writes locally unless the user opts in with WANDB_MODE=online), and no
# tokenizers thread pool that would be forked into workers.
export HF_HUB_OFFLINE=1
export HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
export WANDB_MODE=${WANDB_MODE:-offline}

# The .deepspeed_env for the remote hosts (see the header). DeepSpeed joins DS_ENV_FILE onto ~ and ., and joining an
# absolute path gives that path, so a temporary file replaces both; their lines are copied in first. DeepSpeed splits
# every line at '=', so blank lines (which would make it fail) are dropped. The runner reads the file at start-up.
env_file=$(mktemp "${TMPDIR:-/tmp}/cmbert-deepspeed_env.XXXXXX")
trap 'rm -f "$env_file"' EXIT
{
    for dir in "$HOME" .; do
        user_file=$dir/${DS_ENV_FILE:-.deepspeed_env}
        if [[ -f $user_file ]]; then
            grep -v '^[[:space:]]*$' "$user_file" || true
        fi
    done
    for name in OMP_NUM_THREADS HF_HUB_OFFLINE HF_DATASETS_OFFLINE TOKENIZERS_PARALLELISM WANDB_MODE; do
        echo "$name=${!name}"
    done
} > "$env_file"
export DS_ENV_FILE=$env_file

read -ra launcher_args <<< "${DEEPSPEED_ARGS:-}"
echo "launch_multi_node.sh: hosts from $hostfile, rendezvous $master_addr:$master_port," \
    "OMP_NUM_THREADS=$OMP_NUM_THREADS, config $config" >&2
# `python -m deepspeed.launcher.runner` is the `deepspeed` command run by this interpreter: the remote launchers run
# sys.executable, so it must be the .venv's. --module starts each worker as `python -m cmbert.pretrain.train --local_rank=N`
# (train.py accepts --local_rank); the runner puts this folder on PYTHONPATH for the remote hosts.
# Not exec'd: the EXIT trap removes the temporary env file when the run ends.
"$python" -m deepspeed.launcher.runner --hostfile "$hostfile" --master_addr "$master_addr" \
    --master_port "$master_port" "${launcher_args[@]}" --module cmbert.pretrain.train --config "$config" "$@"
