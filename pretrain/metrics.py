"""Training metrics: FLOPs and MFU of packed batches, a JSONL + wandb logger, the loss-curve PNG, the progress text.

FLOPs count only the matrix multiplications a step *needs* (the usual MFU convention: PaLM appendix B, Chinchilla):
forward + backward = 3x the forward (backward computes the gradient of both inputs of every matmul), a multiply-add
is 2 FLOPs, and nothing is counted for norms, activations, rotary, softmax, biases, the embedding lookup, nor for
activation recomputation (gradient checkpointing, flash-attn's backward). Attention is counted per document, since a
packed row never attends across document boundaries, and inside the band on sliding-window layers.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import secrets
import time
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

import torch
from transformers import ModernBertConfig

# ------------------------------------------------------------------------------------------------------------ FLOPs


def _encoder_matmul_params(config: ModernBertConfig) -> int:
    """Weights of the matmuls every token goes through, per layer: attn.Wqkv (h x 3h), attn.Wo (h x h),
    mlp.Wi (h x 2i: GeGLU's input and gate halves), mlp.Wo (i x h)."""
    h, i = config.hidden_size, config.intermediate_size
    return config.num_hidden_layers * (3 * h * h + h * h + 2 * i * h + i * h)


def _head_matmul_params(config: ModernBertConfig, include_decoder: bool = True) -> int:
    """The MLM head: head.dense (h x h), then the decoder (h x vocab, tied to the token embeddings)."""
    h = config.hidden_size
    return h * h + (h * config.vocab_size if include_decoder else 0)


def model_flops_per_token(config: ModernBertConfig, include_embedding: bool = False) -> int:
    """6 x matmul weights a token passes through (fwd + bwd), as if the head ran on every token: the encoder layers
    and head.dense, plus the decoder (the tied embedding projection, h x vocab) when `include_embedding`.
    Attention scores are not included (they depend on document lengths): `step_flops` counts them."""
    return 6 * (_encoder_matmul_params(config) + _head_matmul_params(config, include_decoder=include_embedding))


def band_pairs(length: int, window: int) -> int:
    """(query, key) pairs with |i - j| <= window inside one document of `length` tokens.
    sum_i [min(i, w) + min(L-1-i, w) + 1] = L + 2 sum_i min(i, w); with m = min(w, L-1) that is L(2m+1) - m(m+1)
    (m = L-1 gives L^2: the window covers the whole document)."""
    if length <= 0:
        return 0
    m = min(window, length - 1)
    return length * (2 * m + 1) - m * (m + 1)


def step_flops(config: ModernBertConfig, cu_seqlens: torch.Tensor | list[int], n_predicted: int) -> float:
    """FLOPs of one forward + backward over a packed batch (document boundaries `cu_seqlens`), where the MLM head
    runs on the `n_predicted` labelled tokens only (modeling/model.py applies `head` and the decoder to
    `h[selected]`, so head.dense counts for predicted tokens, not for every token).

    - dense: 6 x (encoder matmul weights) x tokens + 6 x (head.dense + decoder weights) x n_predicted;
    - attention, per layer and document of L tokens: QK^T and AV, each 2 FLOPs x pairs x head_dim x heads, times 3
      for fwd + bwd = 12 x pairs x hidden; pairs = L^2 on "full_attention" layers and the band count
      `band_pairs(L, local_attention // 2)` on "sliding_attention" layers (each token sees +-local_attention//2)."""
    bounds = cu_seqlens.tolist() if torch.is_tensor(cu_seqlens) else list(cu_seqlens)
    lengths = [int(b) - int(a) for a, b in pairwise(bounds)]
    n_tokens = sum(lengths)
    window = config.local_attention // 2
    full_pairs = sum(length * length for length in lengths)
    band = sum(band_pairs(length, window) for length in lengths)
    pairs = sum(full_pairs if kind == "full_attention" else band for kind in config.layer_types)
    dense = 6 * _encoder_matmul_params(config) * n_tokens + 6 * _head_matmul_params(config) * n_predicted
    return float(dense + 12 * config.hidden_size * pairs)


# Dense (no 2:4 sparsity) peak tensor FLOP/s from the vendors' data sheets, per GPU: (name pattern, bf16, fp16, tf32,
# fp32). Patterns are searched in torch.cuda.get_device_name() in this order, variants before the family name.
_PEAKS: list[tuple[str, float | None, float | None, float | None, float | None]] = [
    (r"H100.*PCIe", 756e12, 756e12, 378e12, 51.2e12),
    (r"H[12]00.*NVL", 835e12, 835e12, 418e12, 60e12),
    (r"H100|H800|H200", 989e12, 989e12, 495e12, 67e12),  # SXM ("NVIDIA H100 80GB HBM3"), H200, GH200
    (r"B200", 2250e12, 2250e12, 1100e12, None),
    (r"A100|A800", 312e12, 312e12, 156e12, 19.5e12),
    # AWS's A10G publishes no tensor figure; it is usually quoted at ~70 TF (half rate with fp32 accumulation,
    # as on GeForce Ampere), not the A10's 125 TF. Set CMBERT_PEAK_FLOPS if you know better for your instance.
    (r"A10G", 70e12, 70e12, 35e12, 31.2e12),
    (r"\bA10\b", 125e12, 125e12, 62.5e12, 31.2e12),
    (r"\bA30\b", 165e12, 165e12, 82e12, 10.3e12),
    (r"\bA40\b", 149.7e12, 149.7e12, 74.8e12, 37.4e12),
    (r"L40S", 362e12, 362e12, 183e12, 91.6e12),
    (r"\bL40\b", 181e12, 181e12, 90.5e12, 90.5e12),
    (r"\bL4\b", 121e12, 121e12, 60e12, 30.3e12),
    (r"RTX 4090", 165e12, 165e12, 82.6e12, 82.6e12),
    (r"V100.*PCIE", None, 112e12, None, 14e12),  # Volta: fp16 tensor cores, no bf16 or tf32
    (r"V100", None, 125e12, None, 15.7e12),
    (r"\bT4\b", None, 65e12, None, 8.1e12),
    (r"MI300X", 1307e12, 1307e12, 654e12, 163e12),
]


def _tf32_matmuls() -> bool:
    """Whether fp32 matmuls run on TF32 tensor cores (torch's new `fp32_precision`, else the legacy flag)."""
    precision = getattr(torch.backends.cuda.matmul, "fp32_precision", "none")
    if precision != "none":
        return precision == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Peak dense FLOP/s of one `device` for matmuls in `dtype`; None on CPU or an unknown GPU (MFU is then not
    reported). The environment variable CMBERT_PEAK_FLOPS (e.g. "989e12") overrides the table on any device."""
    if override := os.environ.get("CMBERT_PEAK_FLOPS"):
        return float(override)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    if dtype not in (torch.bfloat16, torch.float16, torch.float32):
        return None
    name = torch.cuda.get_device_name(device)
    column = {torch.bfloat16: 1, torch.float16: 2}.get(dtype, 3 if _tf32_matmuls() else 4)
    for row in _PEAKS:
        if re.search(row[0], name, re.IGNORECASE):
            return row[column]
    return None


def mfu(flops: float, seconds: float, peak: float | None, world_size: int = 1) -> float | None:
    """Model FLOPs utilisation: `flops` done by all `world_size` devices together in `seconds`, over their summed
    peak. None when the peak is unknown (or no time passed)."""
    if peak is None or peak <= 0 or seconds <= 0:
        return None
    return flops / (seconds * peak * world_size)


# ---------------------------------------------------------------------------------------------------------- logging


def read_jsonl(path: Path) -> list[dict]:
    """Records of a metrics file; a line cut short by a kill mid-write is skipped."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLogger:
    """Rank 0's metrics: one JSON line per `log` call in `out_dir/metrics.jsonl` (flushed at once, so a kill loses
    nothing), the same scalars to wandb, and the loss-curve PNG `out_dir/loss.png` at `close`.

    - `enabled=False` (ranks other than 0) makes every method a no-op.
    - `wandb_mode` is "offline" (the default: files under out_dir/wandb, no network; `wandb sync` uploads them),
      "online" (the user opted in) or "disabled" (wandb is never imported). This value wins over a WANDB_MODE in the
      environment, so the config file alone decides whether anything leaves the machine. Console capture and code
      saving are off: only the scalars given to `log` and the config reach wandb.
    - `resume_step`: a resumed run keeps the existing file's lines with step < resume_step and drops the rest (steps
      the run will redo), so every step appears once; None starts a fresh file. The wandb run id is kept in
      out_dir/wandb-run-id, and a resumed run (resume_step > 1) continues that wandb run."""

    def __init__(self, out_dir: Path, config: dict, enabled: bool, wandb_mode: str = "offline",
                 project: str = "clinical-modernbert", run_name: str | None = None, resume_step: int | None = None):
        self.enabled, self.run, self.file = enabled, None, None
        if not enabled:
            return
        if wandb_mode not in ("offline", "online", "disabled"):
            raise ValueError(f"wandb_mode must be offline, online or disabled, not {wandb_mode!r}")
        try:  # wandb stores the config as JSON; plain values only, so no object's repr can carry anything else
            json.dumps(config, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise TypeError(f"config must hold only plain JSON values (str, numbers, lists, dicts): {error}") from None
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "metrics.jsonl"
        kept = []
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_jsonl(self.path) if isinstance(r.get("step"), int) and r["step"] < resume_step]
        self.file = self.path.open("w")
        self.file.writelines(json.dumps(r) + "\n" for r in kept)
        self.file.flush()
        if wandb_mode != "disabled":
            import wandb

            id_file = self.out_dir / "wandb-run-id"
            resuming = resume_step is not None and resume_step > 1 and id_file.exists()  # a fresh run passes 1
            run_id = id_file.read_text().strip() if resuming else None
            run_id = run_id or secrets.token_hex(4)
            id_file.write_text(run_id + "\n")
            self.run = wandb.init(project=project, name=run_name, id=run_id, resume="allow", dir=str(self.out_dir),
                                  mode=wandb_mode, config=config,
                                  settings=wandb.Settings(console="off", save_code=False, disable_code=True))

    def log(self, step: int, **scalars: float) -> None:
        if not self.enabled:
            return
        values = {}
        for key, value in scalars.items():
            # Numbers only, so free text (a note, a sample) can never reach the file or wandb by mistake.
            if not isinstance(value, numbers.Real):
                raise TypeError(f"metric {key!r} must be a number, got {type(value).__name__}")
            values[key] = int(value) if isinstance(value, numbers.Integral) else float(value)
        self.file.write(json.dumps({"step": int(step), "time": round(time.time(), 3), **values}) + "\n")
        self.file.flush()
        if self.run is not None:
            self.run.log(values, step=int(step))

    def close(self) -> None:
        if not self.enabled or self.file is None:
            return
        self.file.close()
        self.file = None
        if self.run is not None:
            self.run.finish()
            self.run = None
        plot_metrics(self.path, self.out_dir / "loss.png")


# ------------------------------------------------------------------------------------------------ plot and progress


def _ema(values: list[float], alpha: float) -> list[float]:
    """Bias-corrected exponential moving average (as TensorBoard's smoothing): the first points are not pulled
    towards zero."""
    out, avg = [], 0.0
    for n, v in enumerate(values, 1):
        avg = (1 - alpha) * avg + alpha * v
        out.append(avg / (1 - (1 - alpha) ** n))
    return out


def plot_metrics(jsonl: Path, png: Path, keys: Iterable[str] = ("loss", "eval_loss")) -> None:
    """Loss vs step (raw, with a smoothed line once there are enough points; keys starting with "eval" as
    markers), and the learning rate in a second panel when it was logged. Keys never logged are skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_jsonl(Path(jsonl))
    series = {k: [(r["step"], r[k]) for r in records if isinstance(r.get(k), (int, float))] for k in (*keys, "lr")}
    lr = series.pop("lr")
    fig, axes = plt.subplots(2 if lr else 1, 1, figsize=(8, 6 if lr else 4), sharex=True, squeeze=False)
    ax = axes[0, 0]
    for key, points in series.items():
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        if key.startswith("eval"):
            ax.plot(steps, values, "o--", markersize=4, label=key)
        elif len(values) >= 10:
            ax.plot(steps, values, alpha=0.3, linewidth=0.8, label=f"{key} (raw)")
            ax.plot(steps, _ema(list(values), alpha=min(0.5, 50 / len(values))), linewidth=1.5, label=f"{key} (EMA)")
        else:
            ax.plot(steps, values, "-", marker=".", label=key)
    ax.set_ylabel("MLM loss (cross-entropy, nats)")
    ax.set_title(f"Pretraining: {Path(jsonl).parent.name or 'run'}")
    ax.grid(alpha=0.3)
    if any(series.values()):
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no loss logged yet", ha="center", va="center", transform=ax.transAxes)
    if lr:
        steps, values = zip(*lr, strict=True)
        axes[1, 0].plot(steps, values, color="tab:green")
        axes[1, 0].set_ylabel("learning rate")
        axes[1, 0].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        axes[1, 0].grid(alpha=0.3)
    axes[-1, 0].set_xlabel("optimizer step")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def _si(value: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.1f}{suffix}"
    return f"{value:.0f}"


def format_progress(step: int, total: int, loss: float, lr: float, tokens_per_s: float, mfu: float | None) -> str:
    """tqdm postfix, e.g. "loss 2.345 lr 3.0e-04 tok/s 12.3k mfu 41%" (the bar itself shows step / total)."""
    utilization = "-" if mfu is None else f"{mfu * 100:.0f}%" if mfu >= 0.1 else f"{mfu * 100:.1f}%"
    return f"loss {loss:.3f} lr {lr:.1e} tok/s {_si(tokens_per_s)} mfu {utilization}"
