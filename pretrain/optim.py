"""Optimizer, learning-rate schedule and batch-size warmup, as ModernBERT trained (docs/pretraining.md).

- StableAdamW (torch-optimi): AdamW whose per-tensor LR is divided by max(1, RMS(g²/v)) (Adafactor update clipping);
  AdamW is the plain alternative. No weight decay on biases and norm weights (ModernBERT's `filter_bias_norm_wd`).
- `weight_decay` is *fully decoupled* for both names, as ModernBERT's `decoupled_stableadamw`: each step multiplies a
  decayed weight by 1 - weight_decay * lr_t / peak_lr, so 1e-5 means 1e-5 per step at peak LR, whatever the LR.
- Warmup-stable-decay multiplier with a 1-sqrt (or linear, cosine) decay, and a linear batch-size warmup.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from cmbert.core.errors import UserError
from cmbert.core.loop import wsd_lambda

OPTIMIZERS = ("adamw", "stableadamw")

# Why StableAdamW needs ZeRO stage 0. Its update clipping is per tensor, but with ZeRO >= 1 DeepSpeed hands the
# client optimizer one flattened fp32 partition per parameter group, so the RMS is taken over many tensors at once.
# Measured (DeepSpeed 0.19.8, one CPU process, fp32, tiny ModernBertForMaskedLM, lr 3e-3, 5 steps; max |loss - ZeRO-0
# loss| over the steps; tests/test_optim.py::test_zero_stages_against_zero0 reruns it):
#   ZeRO stage                      1          2          3
#   adamw                           0          0          0        (elementwise: flattening changes nothing)
#   stableadamw                     1.8e-3     1.8e-3     2.8e-2
# Under ZeRO-1/2 one RMS over the whole partition dilutes the outlier tensors that per-tensor clipping exists for
# (at lr 8e-4: clipping on 2 of 10 partition-steps vs 30 of 85 tensor-steps at ZeRO-0), so losses track plain AdamW. ZeRO-3 is worse still: it calls optimizer.step() once per sub-group and optimi
# advances every group's step counter on each call (even with no grads), which skews Adam's bias correction.
# (DeepSpeed also refuses any non-DeepSpeed optimizer under ZeRO unless "zero_allow_untested_optimizer": true.)
ZERO_NOTE = (
    "StableAdamW's per-tensor update clipping needs ZeRO stage 0; with ZeRO >= 1 DeepSpeed hands the optimizer "
    "flattened fp32 partitions (many tensors in one), so the clipping becomes per partition and the updates change"
)


def parameter_groups(model: nn.Module, weight_decay: float, decay_embeddings: bool = True) -> list[dict]:
    """Two groups: decayed matrices, and biases + norm weights (any parameter with ndim < 2, or owned by a norm
    module) without decay. Embeddings are decayed, as in ModernBERT (optimi's `param_groups_weight_decay` only
    filters ndim <= 1 and biases); `decay_embeddings=False` moves nn.Embedding weights (and the MLM decoder tied to
    them) to the no-decay group. Tied parameters appear once; frozen ones not at all."""
    norms = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
    no_decay_ids = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if (param.ndim < 2 or name == "bias" or isinstance(module, norms)
                    or (not decay_embeddings and isinstance(module, nn.Embedding))):
                no_decay_ids.add(id(param))
    decay, no_decay = [], []
    for param in model.parameters():  # deduplicates tied weights
        if param.requires_grad:
            (no_decay if id(param) in no_decay_ids else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, name: str, lr: float, betas: tuple[float, float], eps: float,
                    weight_decay: float, decay_embeddings: bool = True) -> torch.optim.Optimizer:
    """`lr` is the peak LR (the scheduler multiplies it); `weight_decay` is fully decoupled (see module docstring)."""
    if name not in OPTIMIZERS:
        raise UserError(f"optim.name: unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if lr <= 0 or weight_decay < 0:
        raise UserError(f"optim.lr must be > 0 and optim.weight_decay >= 0, got lr={lr}, weight_decay={weight_decay}")
    groups = parameter_groups(model, weight_decay, decay_embeddings)
    if name == "adamw":
        # torch AdamW multiplies by 1 - lr_t * wd; wd / peak_lr turns that into 1 - weight_decay * lr_t / peak_lr.
        for group in groups:
            group["weight_decay"] /= lr
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
    import optimi  # imported here so plain-AdamW users never need torch-optimi

    # optimi's default (decouple_lr=False) decays by 1 - lr_t * wd like torch AdamW, which makes ModernBERT's 1e-5
    # vanish at lr 8e-4 (8e-9 per step); decouple_lr=True with max_lr = peak LR is ModernBERT's decoupled_stableadamw:
    # 1 - (lr_t / max_lr) * wd, where lr_t is the tensor's clipped LR, so the RMS clipping also scales its decay.
    # kahan_sum=None: compensated summation only for bf16/fp16 parameters (fp32 master weights need none).
    # foreach/triton=None: optimi picks its Triton kernel on CUDA when triton is installed, a per-tensor loop otherwise
    # (foreach=True is deprecated in optimi 0.3 and warns).
    return optimi.StableAdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decouple_lr=True,
                              max_lr=lr, kahan_sum=None, foreach=None, triton=None)


def per_tensor_clipping(optimizer_name: str) -> bool:
    """Whether the optimizer's update depends on whole tensors (StableAdamW's RMS clipping) rather than elements."""
    if optimizer_name not in OPTIMIZERS:
        raise UserError(f"optim.name: unknown optimizer {optimizer_name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return optimizer_name == "stableadamw"


def check_zero_support(optimizer_name: str, zero_stage: int) -> None:
    """Refuse optimizer/ZeRO pairs that would silently train differently from ZeRO stage 0 (see ZERO_NOTE)."""
    if zero_stage not in (0, 1, 2, 3):
        raise UserError(f"zero stage must be 0, 1, 2 or 3, got {zero_stage}")
    if per_tensor_clipping(optimizer_name) and zero_stage >= 1:
        raise UserError(f"{ZERO_NOTE} (got ZeRO stage {zero_stage}); use optim.name=adamw or ZeRO stage 0")


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, decay_steps: int,
                    min_ratio: float = 0.0, decay_shape: str = "1-sqrt") -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over `wsd_lambda`; step it once per optimizer step. Bad settings raise here, not at step N."""
    schedule = partial(wsd_lambda, total_steps=total_steps, warmup_steps=warmup_steps, decay_steps=decay_steps,
                       min_ratio=min_ratio, decay_shape=decay_shape)
    schedule(0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def batch_size_at(step: int, start: int, end: int, warmup_steps: int, multiple: int = 1) -> int:
    """Batch size (rows, or micro-batches) for 0-based `step`: linear from `start` at step 0 towards `end` over
    `warmup_steps` steps, rounded down to a multiple of `multiple` (never below it), then `end`."""
    if step < 0 or warmup_steps < 0 or multiple < 1 or not 1 <= start <= end or end < multiple:
        raise ValueError(f"need step, warmup_steps >= 0, multiple >= 1 and 1 <= start <= end, end >= multiple; got "
                         f"step={step}, start={start}, end={end}, warmup_steps={warmup_steps}, multiple={multiple}")
    if step >= warmup_steps:
        return end
    size = start + (end - start) * step // warmup_steps
    return max(multiple, size // multiple * multiple)
