"""The ICD fine-tuning config: typed dataclasses, YAML presets in `configs/finetune/icd/`, dotted overrides.

    cfg = load_icd_config("configs/finetune/icd/mimic4-icd10.yaml", ["train.lr=3e-5", "seeds=[0,1,2]"])

Defaults follow Edin et al.'s PLM-ICD recipe on MIMIC-IV (AdamW, lr 5e-5, no weight decay, linear warmup and decay,
20 epochs, early stopping on validation mAP with patience 6, one global threshold tuned on validation), with the
whole note read at once in 8,192-token chunks instead of PLM-ICD's 128. Presets change only what differs.
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
    check_ranges,
    load_dataclass,
)
from cmbert.core.lora import LoraSettings, check_lora_settings
from cmbert.core.pruning import PruneSettings, check_prune_settings


@dataclass
class IcdModelConfig:
    # Encoder folders to fine-tune (any transformers ModernBERT: ours from `cmbert export`, a released ModernBERT,
    # BioClinical ModernBERT). Several folders = a head-to-head comparison on the same split.
    init_from: list[str] = field(default_factory=list)
    head: Literal["laat", "pooled"] = "laat"
    max_length: int = 8192  # tokens per chunk, [CLS] and [SEP] included
    max_chunks: int = 4  # a note longer than max_chunks chunks is cut (counted in the report)
    attention_dim: int = 512  # LAAT's d_a
    title_init: bool = True  # label queries from the encoder's reading of each code's title
    # Queries per label, each with its own attention; their terms add up in the label's logit. Query 0 starts on the
    # title, the others on the n-grams that best mark the code in the training notes (finetune/icd/terms.py).
    # 1 = PLM-ICD's single query.
    queries_per_label: int = 1
    attention_backend: AttentionBackend = "auto"
    gradient_checkpointing: bool = False  # recompute each layer in backward: 8k-token notes on small GPUs
    # Parameter-efficient fine-tuning: layers dropped before training (cmbert/core/pruning.py), LoRA adapters on the
    # rest (cmbert/core/lora.py; the head stays fully trainable, the exported model has the adapters merged in).
    prune: PruneSettings = field(default_factory=PruneSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)


@dataclass
class IcdTrainConfig:
    lr: float = 5e-5  # the encoder's peak LR
    head_lr: float = 1e-3  # the freshly initialised head learns faster than the pretrained encoder
    weight_decay: float = 0.0
    warmup_fraction: float = 0.06  # of all optimizer steps; then linear decay to 0
    epochs: int = 20  # head warm-up epochs included
    # Linear probing before fine-tuning (LP-FT, Kumar et al. 2022): the first epochs train only the head on the
    # frozen encoder's states, so the label attention starts from sensible queries instead of pushing noisy
    # gradients into the encoder (one cause of the LAAT/PLM-ICD collapses). Those epochs are cheap: the states are
    # computed once and kept in memory (fp16) when they fit in state_cache_gb, else recomputed without gradients.
    head_warmup_epochs: int = 0
    state_cache_gb: float = 4.0
    max_steps: int = 0  # stop after this many optimizer steps (0 = epochs decide); demo-sized runs
    tokens_per_batch: int = 16384  # per micro-batch, packed without padding (one 8k note + specials fits)
    max_notes_per_batch: int = 16
    grad_accum: int = 1
    grad_clip: float = 1.0
    patience: int = 6  # epochs without a better validation mAP before stopping (Edin's MIMIC-IV setting)
    precision: Precision = "auto"  # auto: bf16 autocast on GPU and bf16-capable CPUs
    checkpoint_every_steps: int = 200  # a killed run resumes from the newest checkpoint (and every epoch end)
    resume: bool = True
    # Optional DeepSpeed engine (data parallel under torchrun / deepspeed launchers; ZeRO-1/2 shard the optimizer
    # state): a preset of configs/deepspeed/ (zero0, zero1, zero2) or a JSON file. None: plain PyTorch.
    deepspeed: str | None = None


@dataclass
class IcdEvalConfig:
    # Systems trained and scored on the same split besides each encoder's full-length model:
    #   tfidf: TF-IDF + one-vs-rest logistic regression; truncated: the same encoder and head on the first
    #   `truncated_length` tokens only (what a 512-token encoder sees).
    baselines: list[str] = field(default_factory=lambda: ["tfidf", "truncated"])
    truncated_length: int = 512
    tfidf_jobs: int = 1  # processes fitting the per-code logistic regressions (MIMIC-IV: as many as you have cores)
    # The baseline's regularization is tuned like the encoders' epochs: each C is fitted and the best validation mAP
    # kept (the best C depends on the train size and the penalty; an untuned C can cost the baseline 10+ points).
    tfidf_c: list[float] = field(default_factory=lambda: [4.0, 16.0, 64.0])
    rare_cutoff: int | None = None  # train count below which a code is "rare" (None: the median train count)
    bootstrap_resamples: int = 1000
    length_buckets: list[int] = field(default_factory=lambda: [512, 2048, 8192])  # test metrics by note tokens


@dataclass
class IcdLoggingConfig:
    every_steps: int = 20
    wandb: WandbMode = "offline"  # online only when the user opts in
    project: str = "clinical-modernbert-icd"


@dataclass
class IcdConfig(ConfigBase):
    out: str = "runs/icd"
    data: str = ""  # a `cmbert finetune icd prepare` folder
    cache: str = ""  # tokenized splits (default: OUT/cache); runs that share a dataset and tokenizer can share it
    seeds: list[int] = field(default_factory=lambda: [0])
    model: IcdModelConfig = field(default_factory=IcdModelConfig)
    train: IcdTrainConfig = field(default_factory=IcdTrainConfig)
    eval: IcdEvalConfig = field(default_factory=IcdEvalConfig)
    logging: IcdLoggingConfig = field(default_factory=IcdLoggingConfig)



BASELINES = ("tfidf", "truncated")


def check_icd_config(cfg: IcdConfig) -> None:
    """Every value that would fail later fails here, naming its key."""
    if not cfg.data:
        raise ConfigError("data: give the prepared dataset folder (cmbert finetune icd prepare --out DIR)")
    if not Path(cfg.data, "labels.json").is_file():
        raise ConfigError(f"data: {cfg.data} is not a prepared ICD dataset (no labels.json)")
    if not cfg.model.init_from:
        raise ConfigError("model.init_from: give at least one transformers ModernBERT folder")
    for folder in cfg.model.init_from:
        if not Path(folder, "config.json").is_file():
            raise ConfigError(f"model.init_from: {folder} has no config.json (a local ModernBERT folder is needed; "
                              "the Hugging Face hub is not used)")
    if not cfg.seeds:
        raise ConfigError("seeds: give at least one seed")
    m, t = cfg.model, cfg.train
    check_ranges(m, "model", {"max_length": ">= 16", "max_chunks": ">= 1", "attention_dim": ">= 1",
                              "queries_per_label": ">= 1"})
    check_prune_settings(m.prune, "model.prune")
    check_lora_settings(m.lora, "model.lora")
    if m.head == "pooled" and m.max_chunks != 1:
        raise ConfigError("model.max_chunks: the pooled head reads one chunk per note (set 1), or use head: laat")
    check_ranges(t, "train", {"lr": "> 0", "head_lr": "> 0", "weight_decay": ">= 0", "warmup_fraction": "in [0, 1)",
                              "epochs": ">= 1", "max_steps": ">= 0", "grad_accum": ">= 1", "patience": ">= 1",
                              "max_notes_per_batch": ">= 1"})
    if t.head_warmup_epochs and (m.head != "laat" or t.head_warmup_epochs >= t.epochs):
        raise ConfigError("train.head_warmup_epochs: only for head: laat, and fewer than train.epochs")
    if t.deepspeed is not None:
        from cmbert.core.config import zero_settings

        stage = zero_settings(t.deepspeed).get("zero_optimization", {}).get("stage", 0)
        if stage > 2:
            raise ConfigError("train.deepspeed: ZeRO-3 partitions the weights the per-epoch evaluation reads on every "
                              "rank; fine-tuning an encoder needs at most zero2")
    check_ranges(cfg.eval, "eval", {"tfidf_jobs": ">= 1"})
    if not cfg.eval.tfidf_c or min(cfg.eval.tfidf_c) <= 0:
        raise ConfigError(f"eval.tfidf_c must list one or more C > 0, not {cfg.eval.tfidf_c}")
    if t.tokens_per_batch < m.max_length:
        raise ConfigError(f"train.tokens_per_batch ({t.tokens_per_batch}) must hold one chunk of model.max_length "
                          f"({m.max_length})")
    unknown = sorted(set(cfg.eval.baselines) - set(BASELINES))
    if unknown:
        raise ConfigError(f"eval.baselines: unknown {unknown[0]!r}; choose from {', '.join(BASELINES)}")


def load_icd_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> IcdConfig:
    cfg = load_dataclass(IcdConfig, path, overrides)
    check_icd_config(cfg)
    return cfg
