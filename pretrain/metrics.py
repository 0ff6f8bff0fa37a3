"""Training metrics: FLOPs and MFU of packed batches, a JSONL + wandb logger, the loss-curve PNG, the progress text.

FLOPs count only the matrix multiplications a step *needs* (the usual MFU convention: PaLM appendix B, Chinchilla):
forward + backward = 3x the forward (backward computes the gradient of both inputs of every matmul), a multiply-add
is 2 FLOPs, and nothing is counted for norms, activations, rotary, softmax, biases, the embedding lookup, nor for
activation recomputation (gradient checkpointing, flash-attn's backward). Attention is counted per document, since a
packed row never attends across document boundaries, and inside the band on sliding-window layers.
"""

from __future__ import annotations

import os
import re
from itertools import pairwise

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


# ------------------------------------------------------------------------------------------------ plot and progress


def _si(value: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.1f}{suffix}"
    return f"{value:.0f}"


def format_progress(step: int, total: int, loss: float, lr: float, tokens_per_s: float, mfu: float | None) -> str:
    """tqdm postfix, e.g. "loss 2.345 lr 3.0e-04 tok/s 12.3k mfu 41%" (the bar itself shows step / total)."""
    utilization = "-" if mfu is None else f"{mfu * 100:.0f}%" if mfu >= 0.1 else f"{mfu * 100:.1f}%"
    return f"loss {loss:.3f} lr {lr:.1e} tok/s {_si(tokens_per_s)} mfu {utilization}"
