"""The trajectory config: typed dataclasses, YAML presets in `configs/finetune/trajectory/`, dotted overrides.

    cfg = load_trajectory_config("configs/finetune/trajectory/demo.yaml", ["train.lr=3e-4", "inputs=[both]"])
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from cmbert.core.config import ConfigError, Precision, WandbMode, check_ranges, load_dataclass
from cmbert.core.lora import LoraSettings, check_lora_settings
from cmbert.core.pruning import PruneSettings, check_prune_settings

INPUTS = ("both", "codes", "notes")  # the ablations: what a visit embedding is made of
BASELINES = ("repeat_last", "patient_frequent", "population")


@dataclass
class TrajectoryModelConfig:
    # The note encoder (a local transformers ModernBERT folder: ours, a released ModernBERT, BioClinical ModernBERT).
    # Frozen: each past visit's discharge note is embedded once (cached) and projected into the visit embedding.
    init_from: str = ""
    note_max_tokens: int = 8192  # a longer note is cut (the report counts them)
    chunk_length: int = 8192  # tokens per encoder chunk, [CLS] and [SEP] included (the encoder's context)
    # The encoder's states are averaged over pieces of segment_tokens tokens; the model attends over a note's pieces
    # with note_queries learned queries (finetune/trajectory/model.py says why not one vector per note).
    segment_tokens: int = 128
    note_queries: int = 4
    # Fine-tune the note encoder with the visit model (end to end, at train.encoder_lr) instead of reading cached
    # pieces of a frozen one. Each training batch then runs the encoder over every note its histories read: a GPU
    # job (lower train.batch_size or note_max_tokens if memory runs out); gradient_checkpointing recomputes layers.
    finetune_encoder: bool = False
    gradient_checkpointing: bool = False
    # With finetune_encoder: layers dropped from the note encoder before training (cmbert/core/pruning.py) and LoRA
    # adapters on the rest (cmbert/core/lora.py; at lora.lr instead of train.encoder_lr, merged into encoder/ on save).
    prune: PruneSettings = field(default_factory=PruneSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    max_visits: int = 32  # visits the model reads before a target; longer histories keep the latest
    min_code_count: int = 2  # input codes on fewer training visits share one "rare code" embedding
    # Input code embeddings start from the encoder's reading of each code's title (projected to hidden_size by PCA),
    # so rare codes start near clinically similar ones instead of at random.
    title_init: bool = True


@dataclass
class TrajectoryTrainConfig:
    lr: float = 1e-3
    encoder_lr: float = 2e-5  # the note encoder's, with model.finetune_encoder
    weight_decay: float = 0.01
    epochs: int = 30
    batch_size: int = 32  # patients (each gives all its targets in one causal pass)
    patience: int = 5  # epochs without a better validation `select_metric` before stopping
    select_metric: str = "mar@20"
    grad_clip: float = 1.0
    note_dropout: float = 0.1  # training only: a past note is replaced by "no note" (MIMIC misses some)
    seed: int = 0
    # The LR schedule: constant (every step at the peak LR: the frozen-encoder presets were tuned so), or linear
    # warm-up over warmup_fraction of the steps then linear decay to 0 (the other fine-tuning recipes'). auto: linear
    # when the note encoder fine-tunes with the model (model.finetune_encoder), constant otherwise.
    schedule: Literal["auto", "constant", "linear"] = "auto"
    warmup_fraction: float = 0.1
    max_steps: int = 0  # stop after this many optimizer steps (0 = epochs decide)
    checkpoint_every_steps: int = 200  # a killed run resumes from the newest checkpoint (and every epoch end)
    resume: bool = True


@dataclass
class TrajectoryLoggingConfig:
    every_steps: int = 10  # one line of loss and LR in <out>/<inputs>/metrics.jsonl
    # disabled: metrics.jsonl only, as before this recipe had a log; offline / online (the user opts in) add wandb.
    wandb: WandbMode = "disabled"
    project: str = "clinical-modernbert-trajectory"


@dataclass
class TrajectoryConfig:
    out: str = "runs/trajectory"
    data: str = ""  # a `cmbert finetune trajectory prepare` folder
    inputs: list[str] = field(default_factory=lambda: list(INPUTS))  # one model per entry, same split
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    device: str = "auto"
    precision: Precision = "auto"  # the note encoder's autocast dtype
    bootstrap_resamples: int = 1000
    model: TrajectoryModelConfig = field(default_factory=TrajectoryModelConfig)
    train: TrajectoryTrainConfig = field(default_factory=TrajectoryTrainConfig)
    logging: TrajectoryLoggingConfig = field(default_factory=TrajectoryLoggingConfig)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def check_trajectory_config(cfg: TrajectoryConfig) -> None:
    """Every value that would fail later fails here, naming its key."""
    if not cfg.data:
        raise ConfigError("data: give the prepared dataset folder (cmbert finetune trajectory prepare --out DIR)")
    if not Path(cfg.data, "categories.json").is_file():
        raise ConfigError(f"data: {cfg.data} is not a prepared trajectory dataset (no categories.json)")
    if not cfg.inputs:
        raise ConfigError(f"inputs: give one or more of {', '.join(INPUTS)}")
    for name, allowed, values in (("inputs", INPUTS, cfg.inputs), ("baselines", BASELINES, cfg.baselines)):
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ConfigError(f"{name}: unknown {unknown[0]!r}; choose from {', '.join(allowed)}")
    m, t = cfg.model, cfg.train
    if {"both", "notes"} & set(cfg.inputs) and not (m.init_from and Path(m.init_from, "config.json").is_file()):
        raise ConfigError(f"model.init_from: {m.init_from!r} has no config.json; the inputs {cfg.inputs} read notes and "
                          "need a local ModernBERT folder (or set inputs=[codes])")
    check_prune_settings(m.prune, "model.prune")
    check_lora_settings(m.lora, "model.lora")
    if (m.lora.enabled or m.prune.strategy != "none") and not m.finetune_encoder:
        raise ConfigError("model.lora / model.prune adapt the note encoder while it trains: set "
                          "model.finetune_encoder=true (a frozen encoder's notes are embedded once)")
    check_ranges(m, "model", {"hidden_size": ">= 8", "layers": ">= 1", "heads": ">= 1", "dropout": "in [0, 1)",
                              "max_visits": ">= 1", "min_code_count": ">= 1", "note_max_tokens": ">= 1",
                              "segment_tokens": ">= 1", "note_queries": ">= 1", "chunk_length": ">= 16"})
    if m.hidden_size % m.heads:
        raise ConfigError(f"model.hidden_size: must be divisible by model.heads ({m.heads}), got {m.hidden_size}")
    check_ranges(t, "train", {"note_dropout": "in [0, 1)", "lr": "> 0", "encoder_lr": "> 0", "weight_decay": ">= 0",
                              "epochs": ">= 1", "batch_size": ">= 1", "patience": ">= 1", "warmup_fraction": "in [0, 1)",
                              "max_steps": ">= 0", "checkpoint_every_steps": ">= 1"})
    check_ranges(cfg.logging, "logging", {"every_steps": ">= 1"})
    metric, _, k = t.select_metric.partition("@")
    if metric not in ("recall", "precision", "ndcg", "map", "mar") or not k.isdigit() or int(k) < 1:
        raise ConfigError(f"train.select_metric: expected e.g. mar@20 or recall@20, got {t.select_metric!r}")
    if cfg.bootstrap_resamples < 0:
        raise ConfigError("bootstrap_resamples must be >= 0")


def load_trajectory_config(path: str | Path | None = None,
                           overrides: list[str] | tuple[str, ...] = ()) -> TrajectoryConfig:
    cfg = load_dataclass(TrajectoryConfig, path, overrides)
    check_trajectory_config(cfg)
    return cfg
