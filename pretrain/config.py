"""The pretraining config: typed dataclasses, YAML presets in `configs/pretrain/`, dotted command-line overrides.

    cfg = load_config("configs/pretrain/phase1-1k.yaml", ["optim.lr=5e-4", "schedule.max_steps=2000"])

A preset may start from another (`extends: phase1-1k.yaml`, relative to the file) and change only what differs: the
8k phase is the 1k phase plus its own context, RoPE and LR, never a copy. Every key is checked before any work
starts: an unknown key or a value of the wrong type is a `ConfigError` naming the dotted key. The DeepSpeed dict is
derived from this config (`deepspeed_config`); `configs/deepspeed/zero{0,1,2,3}.json` hold only ZeRO and
communication settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cmbert.core.config import (
    AttentionBackend,
    ConfigBase,
    ConfigError,
    Precision,
    WandbMode,
    load_dataclass,
    zero_settings,
)


@dataclass
class ModelConfig:
    """A new ModernBERT (ModernBERT-base's shape by default), or `init_from` a transformers ModernBERT folder for
    continued pretraining; then the architecture comes from that folder and only the RoPE theta and context below
    change it (the 8k context extension)."""

    init_from: str | None = None
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    global_attn_every_n_layers: int = 3
    local_attention: int = 128  # total window: local layers see +-64 tokens
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    attention_backend: AttentionBackend = "auto"  # modeling/attention.py
    activation_checkpointing: bool = False  # recompute each layer in backward: less memory, ~1/3 more compute
    compile: bool = False  # torch.compile the model (GPU; recompiles per shape on CPU)


@dataclass
class DataConfig:
    shards: str = ""  # a `cmbert corpus pack` folder (its manifest.json)
    tokenizer: str = ""  # the tokenizer the shards were packed with (checked against the manifest's hash)
    weights: dict[str, float] | None = None  # per-source mixture; None: the manifest's
    eval_rows: int = 64  # held-out rows: the end of the first epoch's order, never reached by training below it


@dataclass
class MaskingConfig:
    probability: float = 0.30  # ModernBERT trains at 30 %; BioClinical's phase 2 lowers it to 15 %
    mask_fraction: float = 0.8  # of the chosen tokens: [MASK]
    random_fraction: float = 0.1  # random ordinary token; the rest stay as they are
    eval_probability: float = 0.15  # held-out loss / accuracy, as ModernBERT evaluates


@dataclass
class OptimConfig:
    name: Literal["stableadamw", "adamw"] = "stableadamw"
    lr: float = 8e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 1e-5
    grad_clip: float = 0.0  # global gradient-norm clipping; 0 = off (StableAdamW clips its updates per tensor)


@dataclass
class ScheduleConfig:
    max_steps: int = 1000  # optimizer steps
    warmup_steps: int = 100
    decay_steps: int = 0  # the last steps decay to min_lr_ratio; 0 = warmup-stable (decay in a later phase)
    decay_shape: Literal["1-sqrt", "linear", "cosine"] = "1-sqrt"
    min_lr_ratio: float = 0.0
    rows_per_micro_batch: int = 8  # packed rows per rank per forward pass
    grad_accum: int = 1  # micro-batches per optimizer step
    # Batch-size warmup (ModernBERT grows the batch early in training): rows per micro-batch rise linearly from
    # `batch_warmup_start_rows` to `rows_per_micro_batch` over `batch_warmup_steps` steps.
    batch_warmup_steps: int = 0
    batch_warmup_start_rows: int = 1


@dataclass
class CheckpointConfig:
    every_steps: int = 500
    keep_last: int = 3
    resume: bool = True  # continue from the newest complete checkpoint in <out>/ckpt if there is one


@dataclass
class LoggingConfig:
    every_steps: int = 10
    eval_every_steps: int = 200
    wandb: WandbMode = "offline"  # online only when the user opts in
    project: str = "clinical-modernbert"
    run_name: str | None = None


@dataclass
class DistributedConfig:
    # configs/deepspeed/<zero>.json, or a path to a JSON file of ZeRO/communication settings. StableAdamW needs
    # zero0 (per-tensor update clipping; see pretrain/optim.py); AdamW runs under every stage.
    zero: str = "zero0"
    precision: Precision = "auto"  # auto: bf16 on GPU, fp32 on CPU


@dataclass
class PretrainConfig(ConfigBase):
    out: str = "runs/pretrain"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


# ------------------------------------------------------------------------------------------ building and checking


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> PretrainConfig:
    """A preset (or the defaults) with dotted overrides, checked. Raises ConfigError naming the first bad key."""
    cfg = load_dataclass(PretrainConfig, path, overrides)
    check(cfg)
    return cfg


def check(cfg: PretrainConfig) -> None:
    """Value checks that types cannot express."""
    s, m, o = cfg.schedule, cfg.masking, cfg.optim
    positive = {"schedule.max_steps": s.max_steps, "schedule.rows_per_micro_batch": s.rows_per_micro_batch,
                "schedule.grad_accum": s.grad_accum, "schedule.batch_warmup_start_rows": s.batch_warmup_start_rows,
                "checkpoint.every_steps": cfg.checkpoint.every_steps, "checkpoint.keep_last": cfg.checkpoint.keep_last,
                "logging.every_steps": cfg.logging.every_steps, "logging.eval_every_steps": cfg.logging.eval_every_steps,
                "optim.lr": o.lr}
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key}: must be > 0, got {value}")
    for key, value in {"schedule.warmup_steps": s.warmup_steps, "schedule.decay_steps": s.decay_steps,
                       "schedule.batch_warmup_steps": s.batch_warmup_steps, "data.eval_rows": cfg.data.eval_rows,
                       "optim.weight_decay": o.weight_decay, "optim.grad_clip": o.grad_clip}.items():
        if value < 0:
            raise ConfigError(f"{key}: must be >= 0, got {value}")
    if s.warmup_steps + s.decay_steps > s.max_steps:
        raise ConfigError(f"schedule.warmup_steps + schedule.decay_steps ({s.warmup_steps} + {s.decay_steps}) "
                          f"exceed schedule.max_steps ({s.max_steps})")
    for key, value in {"masking.probability": m.probability, "masking.eval_probability": m.eval_probability}.items():
        if not 0 < value < 1:
            raise ConfigError(f"{key}: must be between 0 and 1, got {value}")
    if m.mask_fraction < 0 or m.random_fraction < 0 or m.mask_fraction + m.random_fraction > 1:
        raise ConfigError("masking.mask_fraction and masking.random_fraction must be >= 0 and sum to at most 1")
    if not 0 <= s.min_lr_ratio <= 1:
        raise ConfigError(f"schedule.min_lr_ratio: must be between 0 and 1, got {s.min_lr_ratio}")
    if not all(0 <= b < 1 for b in o.betas):
        raise ConfigError(f"optim.betas: each must be in [0, 1), got {list(o.betas)}")
    if cfg.model.init_from is None and cfg.model.hidden_size % cfg.model.num_attention_heads:
        raise ConfigError("model.hidden_size must be a multiple of model.num_attention_heads")
    stage = zero_settings(cfg.distributed.zero).get("zero_optimization", {}).get("stage", 0)
    from cmbert.pretrain.optim import check_zero_support

    try:
        check_zero_support(o.name, stage)
    except ValueError as error:
        raise ConfigError(f"optim.name {o.name!r} with distributed.zero {cfg.distributed.zero!r}: {error}") from None
    if not cfg.data.shards or not cfg.data.tokenizer:
        raise ConfigError("data.shards and data.tokenizer must name the packed shards and their tokenizer")


# ------------------------------------------------------------------------------------------ DeepSpeed


def deepspeed_config(cfg: PretrainConfig, bf16: bool) -> dict:
    """The dict handed to `deepspeed.initialize`: the ZeRO preset plus everything derived from the training config.
    The optimizer and LR schedule are passed as objects (no DeepSpeed "optimizer" block: on CPU that would JIT-build
    its FusedAdam)."""
    settings = zero_settings(cfg.distributed.zero)
    return {
        **settings,
        "train_micro_batch_size_per_gpu": cfg.schedule.rows_per_micro_batch,
        "gradient_accumulation_steps": cfg.schedule.grad_accum,
        "gradient_clipping": cfg.optim.grad_clip,
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,  # we log ourselves
        "wall_clock_breakdown": False,
    }
