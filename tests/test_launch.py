"""The launch scripts: syntax (bash -n, shellcheck when installed), usage and exit 2 without arguments, a real
2-process CPU run through scripts/launch_single_node.sh, the DeepSpeed env forwarding of scripts/launch_multi_node.sh
(pdsh replaced by a stub), and scripts/slurm/pretrain.sbatch run by bash with Slurm's commands replaced by stubs that
record their arguments: rendezvous endpoint, node ranks, overrides, and the SIGTERM -> checkpoint -> requeue path."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SINGLE = REPO / "scripts" / "launch_single_node.sh"
MULTI = REPO / "scripts" / "launch_multi_node.sh"
SBATCH = REPO / "scripts" / "slurm" / "pretrain.sbatch"
SCRIPTS = [SINGLE, MULTI, SBATCH]
TINY = REPO / "configs" / "pretrain" / "tiny.yaml"


@pytest.fixture(autouse=True)
def no_process_group_env(monkeypatch):
    """In-process pretraining tests (tests/test_pretrain.py) leave MASTER_ADDR/PORT, RANK... in os.environ; a
    launcher must see the environment a user's shell has."""
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def data(small_shards):
    return small_shards


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stub(folder: Path, name: str, body: str) -> None:
    """An executable bash script `name` in `folder` (put first on PATH to stand in for a real command)."""
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


# ------------------------------------------------------------------------------------------------ all scripts


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    result = subprocess.run(["shellcheck", "--shell=bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", [SINGLE, MULTI], ids=lambda p: p.name)
def test_usage_without_arguments(script):
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "usage:" in result.stderr and "example:" in result.stderr
    assert "configs/pretrain/phase1-1k.yaml" in result.stderr


# ------------------------------------------------------------------------------------------------ single node


def test_single_node_two_processes_on_cpu(data, tmp_path):
    """NPROC=2 on CPU through the real launcher: torchrun, gloo, DeepSpeed; 4 steps, a checkpoint, the export."""
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "WANDB_MODE")}
    env.update(NPROC="2", PYTHON=sys.executable)
    result = subprocess.run(
        ["bash", str(SINGLE), str(TINY), f"data.shards={data / 'shards'}", f"data.tokenizer={data / 'tokenizer'}",
         f"out={out}", "schedule.max_steps=4", "schedule.decay_steps=2",
         "checkpoint.every_steps=4", "logging.eval_every_steps=100"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # cwd: the script must find the repo
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 process(es)" in result.stderr and "OMP_NUM_THREADS=" in result.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    assert (out / "model" / "config.json").exists() and (out / "model" / "model.safetensors").exists()


@pytest.mark.parametrize(("gpu_env", "expected"), [
    ({"NPROC": "3", "CUDA_VISIBLE_DEVICES": "0,1"}, 3),     # NPROC wins
    ({"CUDA_VISIBLE_DEVICES": "0,1"}, 2),
    ({"CUDA_VISIBLE_DEVICES": ""}, 1),                      # every GPU hidden: a CPU run
    ({"FAKE_GPUS": "4"}, 4),                                # nvidia-smi -L
    ({}, 1),                                                # no GPU, no nvidia-smi
])
def test_single_node_process_count_and_environment(tmp_path, gpu_env, expected):
    """The command and environment torchrun gets (PYTHON is a stub that prints them)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub(bin_dir, "fake-python", 'echo "args: $*"\n'
                                 'echo "env: $OMP_NUM_THREADS $HF_HUB_OFFLINE $TOKENIZERS_PARALLELISM $WANDB_MODE"\n')
    if "FAKE_GPUS" in gpu_env:
        stub(bin_dir, "nvidia-smi", 'for i in $(seq 0 $((FAKE_GPUS - 1))); do echo "GPU $i: H100 (UUID: x)"; done\n')
    path = ":".join(p for p in os.environ["PATH"].split(":") if not (Path(p) / "nvidia-smi").exists())
    env = {k: v for k, v in os.environ.items() if k not in ("NPROC", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")}
    env.update(gpu_env, PATH=f"{bin_dir}:{path}", PYTHON=str(bin_dir / "fake-python"), WANDB_MODE="online")
    result = subprocess.run(["bash", str(SINGLE), "configs/pretrain/tiny.yaml", "optim.lr=1e-3", "out=runs/a b"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    args, environment = result.stdout.splitlines()
    assert args == (f"args: -m torch.distributed.run --standalone --nproc_per_node={expected} -m cmbert.pretrain.train "
                    f"--config {TINY} optim.lr=1e-3 out=runs/a b")
    threads = max(1, len(os.sched_getaffinity(0)) // expected)
    assert environment == f"env: {threads} 1 false online"  # the user's WANDB_MODE is kept


def test_single_node_missing_config(tmp_path):
    result = subprocess.run(["bash", str(SINGLE), str(tmp_path / "nope.yaml")], capture_output=True, text=True)
    assert result.returncode == 2 and "config not found" in result.stderr


# ------------------------------------------------------------------------------------------------ multi node


def test_multi_node_forwards_environment_through_pdsh(tmp_path):
    """Two hosts: DeepSpeed's runner builds a pdsh command (pdsh stubbed) whose remote part exports the variables
    from the .deepspeed_env the script wrote, and starts `-m cmbert.pretrain.train` with the config and overrides."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "pdsh.args"
    stub(bin_dir, "pdsh", f'printf "%s\\n" "$@" > {log}\n')
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two nodes\n\nworker-1 slots=8\nworker-2 slots=8\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".deepspeed_env").write_text("NCCL_DEBUG=INFO\n\nMY_SETTING=kept\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MASTER_ADDR", "DS_ENV_FILE")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", HOME=str(home), TMPDIR=str(tmp), PYTHON=sys.executable,
               WANDB_MODE="online", DEEPSPEED_ARGS="--no_ssh_check")
    result = subprocess.run(["bash", str(MULTI), str(hostfile), str(TINY), "optim.lr=1e-3", "out=runs/x"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    args = log.read_text().splitlines()
    assert args[args.index("-w") + 1] == "worker-1,worker-2"
    remote = " ".join(args)
    threads = max(1, len(os.sched_getaffinity(0)) // 8)  # this machine's cores (nproc) per slot
    for export in (f"export OMP_NUM_THREADS={threads};", "export HF_HUB_OFFLINE=1;",
                   "export TOKENIZERS_PARALLELISM=false;", "export WANDB_MODE=online;",  # the user's value wins
                   "export MY_SETTING=kept;", "export NCCL_DEBUG=INFO;"):
        assert export in remote
    assert f"cd {REPO};" in remote
    assert "--master_addr=worker-1" in remote and "--master_port=29500" in remote
    assert "--module" in args  # each worker: python -u -m cmbert.pretrain.train --local_rank=N --config ...
    tail = args[args.index("cmbert.pretrain.train"):]
    assert tail == ["cmbert.pretrain.train", "--config", str(TINY), "optim.lr=1e-3", "out=runs/x"]
    assert not list(tmp.iterdir())  # the temporary .deepspeed_env is removed at exit


@pytest.mark.slow
def test_multi_node_one_host_runs_locally(data, tmp_path):
    """A one-host hostfile: DeepSpeed's runner starts 2 CPU workers itself (`python -u -m cmbert.pretrain.train
    --local_rank=N ...`, the --module path) with this environment; 4 steps and the export. Slow (12-35 s measured on
    2 shared cores): the default suite checks the same command line through the pdsh stub."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MASTER_ADDR", "CUDA_VISIBLE_DEVICES")}
    env.update(PYTHON=sys.executable, DEEPSPEED_ARGS="--no_ssh_check", MASTER_PORT=str(free_port()))
    result = subprocess.run(
        ["bash", str(MULTI), str(hostfile), str(TINY), f"data.shards={data / 'shards'}",
         f"data.tokenizer={data / 'tokenizer'}", f"out={out}", "schedule.max_steps=4", "schedule.decay_steps=2",
         "checkpoint.every_steps=4", "logging.eval_every_steps=100"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "--local_rank=1" in result.stdout + result.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert (out / "model" / "model.safetensors").exists()


def test_multi_node_needs_two_arguments(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("worker-1 slots=8\n")
    result = subprocess.run(["bash", str(MULTI), str(hostfile)], capture_output=True, text=True)
    assert result.returncode == 2 and "usage:" in result.stderr


# ------------------------------------------------------------------------------------------------ slurm


def test_sbatch_directives():
    text = SBATCH.read_text()
    directives = [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("#SBATCH")]
    assert any(d.startswith("--signal=") and "TERM@" in d for d in directives)
    for wanted in ("--requeue", "--ntasks-per-node=1", "--gpus-per-node=8", "--output=runs/slurm-%j.out"):
        assert wanted in directives
    assert any(d.startswith(("--time=", "--cpus-per-task=", "--nodes=")) for d in directives)


def fake_slurm(tmp_path: Path, srun_body: str) -> tuple[dict, Path]:
    """An environment in which the sbatch script runs as on node 0 of a 2-node job: scontrol, scancel and srun are
    stubs that log their arguments; PYTHON is a stub that logs what each node's torchrun would get."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    stub(bin_dir, "scontrol", f'echo "scontrol $*" >> {log}\n'
                              'if [[ $1 == show ]]; then printf "gpu-a01\\ngpu-a02\\n"; fi\n')
    stub(bin_dir, "scancel", f'echo "scancel $*" >> {log}\nkill -TERM "$(cat {tmp_path}/srun.pid)"\n')
    stub(bin_dir, "srun", f'echo "srun $*" >> {log}\necho $$ > {tmp_path}/srun.pid\n' + srun_body)
    stub(bin_dir, "fake-python", f'echo "node $SLURM_NODEID: python $*" >> {log}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "OMP_", "GPUS_"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PYTHON=str(bin_dir / "fake-python"), SLURM_JOB_ID="4242",
               SLURM_JOB_NODELIST="gpu-a[01-02]", SLURM_NNODES="2", SLURM_NODEID="0", SLURM_SUBMIT_DIR=str(REPO),
               SLURM_CPUS_PER_TASK="64", SLURM_GPUS_ON_NODE="8")
    return env, log


# srun stand-in: skip its own options, then run the command once per node with that node's SLURM_NODEID.
RUN_PER_NODE = 'while [[ $1 == -* ]]; do shift; done\nfor n in 0 1; do SLURM_NODEID=$n "$@"; done\n'


def test_sbatch_calls_srun_torchrun(tmp_path):
    env, log = fake_slurm(tmp_path, RUN_PER_NODE)
    result = subprocess.run(["bash", str(SBATCH), "configs/pretrain/tiny.yaml", "optim.lr=1e-3", "out=runs/x y"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "scontrol show hostnames gpu-a[01-02]"
    assert calls[1].startswith("srun --kill-on-bad-exit=1 bash -c")
    for node in (0, 1):
        line = next(c for c in calls if c.startswith(f"node {node}:"))
        assert line == (f"node {node}: python -m torch.distributed.run --node_rank={node} --nnodes=2 "
                        "--nproc_per_node=8 --rdzv_backend=c10d --rdzv_id=4242 --rdzv_endpoint=gpu-a01:29500 "
                        "-m cmbert.pretrain.train --config configs/pretrain/tiny.yaml optim.lr=1e-3 out=runs/x y")
    assert not any("requeue" in c for c in calls)  # a run that ends by itself is not requeued
    assert "OMP_NUM_THREADS=8" in result.stderr  # 64 cores / 8 GPUs


def test_sbatch_default_config_and_override_first(tmp_path):
    env, log = fake_slurm(tmp_path, RUN_PER_NODE)
    env.update(MASTER_PORT="31000")
    result = subprocess.run(["bash", str(SBATCH), "schedule.max_steps=10"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    line = next(c for c in log.read_text().splitlines() if c.startswith("node 0:"))
    assert "--rdzv_endpoint=gpu-a01:31000" in line
    assert line.endswith("--config configs/pretrain/phase1-1k.yaml schedule.max_steps=10")


def test_sbatch_outside_slurm():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run(["bash", str(SBATCH)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not inside a Slurm job" in result.stderr


def test_sbatch_passes_failure_on(tmp_path):
    env, log = fake_slurm(tmp_path, "exit 3\n")
    result = subprocess.run(["bash", str(SBATCH)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert not any("requeue" in c for c in log.read_text().splitlines())  # a crash is not requeued


def test_sbatch_sigterm_stops_step_then_requeues(tmp_path):
    """Slurm's warning (SIGTERM to the batch shell) -> scancel --signal=TERM to the step (its stub signals the srun
    stub, standing in for slurmstepd signalling the tasks) -> the step ends -> scontrol requeue -> exit 0."""
    srun_waits = f'trap \'echo "srun: step got TERM" >> {tmp_path}/calls.log; exit 1\' TERM\n' \
                 'while true; do sleep 0.05; done\n'
    env, log = fake_slurm(tmp_path, srun_waits)
    proc = subprocess.Popen(["bash", str(SBATCH)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not (tmp_path / "srun.pid").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # the batch shell has set its trap long before srun starts; give srun its own trap
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    calls = log.read_text().splitlines()
    assert "scancel --signal=TERM 4242" in calls
    assert calls.index("srun: step got TERM") < calls.index("scontrol requeue 4242")
    assert "requeueing job 4242" in stderr
