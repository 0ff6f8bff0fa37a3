"""Where and how a run executes: device and autocast dtype, distributed initialisation, the cache folder, and the
provenance every run records (git SHA, package versions, hardware)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from cmbert.core.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16_cpu() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX). There, bf16 autocast runs the encoder
    ~1.6x faster than fp32 (bench/icd_step.py); elsewhere bf16 is emulated and slower than fp32."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


def device_and_dtype(precision: str = "auto", device: str = "auto") -> tuple[torch.device, torch.dtype]:
    """The device, and the autocast dtype for training and inference: `auto` is bf16 on CUDA and on CPUs with native
    bf16, fp32 elsewhere. Weights and the label-attention softmax stay fp32 in every case."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    else:
        dev = torch.device(device)
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" or (dev.type == "cpu" and native_bf16_cpu()) else "fp32"
    return dev, torch.bfloat16 if precision == "bf16" else torch.float32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> tuple[int, int, torch.device]:
    """Join the process group that torchrun / deepspeed / srun set up, or make a one-process group (no launcher)."""
    if "RANK" not in os.environ and "SLURM_PROCID" in os.environ:  # srun without torchrun
        os.environ.update(RANK=os.environ["SLURM_PROCID"], WORLD_SIZE=os.environ["SLURM_NTASKS"],
                          LOCAL_RANK=os.environ.get("SLURM_LOCALID", "0"))
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    if not torch.cuda.is_available():
        # DeepSpeed JIT-compiles a shared-memory all-reduce op at its first init on CPU (~35 s, g++); gloo's own
        # all-reduce is all a CPU run needs. (Must patch the module object itself: docs/ARCHITECTURE.md,
        # "CPU pitfalls".)
        import deepspeed.comm.torch  # noqa: F401

        sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
    import deepspeed

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size(), device


def git_sha() -> str | None:
    """The checkout's commit, or None outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(device: torch.device) -> dict:
    """What a fine-tuning run records about where it ran: the commit, the device and the versions."""
    import transformers  # here: seconds to import, and only the provenance needs it

    return {"git_sha": git_sha(), "device": str(device), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": sys.version.split()[0]}


def encoder_name(folder: str) -> str:
    path = Path(folder).resolve()
    return path.name if path.name not in ("model", "best") else f"{path.parent.name}-{path.name}"


def default_cache_dir() -> Path:
    """The project's download cache: $CMBERT_CACHE, else ~/.cache/cmbert."""
    return Path(os.environ.get("CMBERT_CACHE") or Path.home() / ".cache" / "cmbert").expanduser()
