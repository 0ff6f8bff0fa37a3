"""The config of the generic recipes (`cmbert finetune classify|tokens train`): typed dataclasses, YAML presets in
`configs/finetune/classify/` and `configs/finetune/tokens/`, dotted overrides.

    cfg = load_generic_config("configs/finetune/classify/demo.yaml", ["train.lr=3e-5"], task="classify")

One family for both tasks: the task is named by the command (a preset may say which task it is for, and a preset of
the other task is refused). Keys that only one task reads say so in their comment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cmbert.core.config import (
    AttentionBackend,
    ConfigBase,
    ConfigError,
    LoggingSection,
    TrainSection,
    check_encoder_folder,
    check_split_paths,
    check_train_settings,
    load_dataclass,
)
from cmbert.core.lora import LoraSettings, check_lora_settings
from cmbert.core.pruning import PruneSettings, check_prune_settings

TASKS = ("classify", "tokens")


@dataclass
class GenericDataConfig:
    # A .csv / .jsonl (.gz looked through) file, or a local `datasets` folder (`save_to_disk`) of a Dataset or a
    # DatasetDict. A DatasetDict folder given as `train` also provides `validation` (or `val` / `dev`) and `test`
    # when those keys are left empty.
    train: str = ""
    validation: str | None = None  # model selection and early stopping read it
    test: str | None = None  # optional: the report's test metrics
    # classify: the text, and its label (a string or number), its labels (a JSON / `datasets` list), or a
    # delimited string of labels (`label_delimiter`; CSV cells hold one string).
    text_column: str = "text"
    # classify: the second text of a sentence pair (MedNLI's premise is `sentence1`, its hypothesis `sentence2`).
    # Pairs are read as ModernBERT's tokenizer joins them, [CLS] text [SEP] pair [SEP] (no token types), and a pair
    # longer than max_length loses tokens from its longer side first.
    text_pair_column: str | None = None
    label_column: str = "label"
    multi_label: bool = False  # classify: several labels per text (sigmoid + BCE), else exactly one (softmax + CE)
    label_delimiter: str | None = None  # classify, multi_label: "|" reads "cardiac|renal" as two labels
    # tokens: the words and one IOB2 tag per word (O, B-TYPE, I-TYPE): lists in JSONL / `datasets` (ClassLabel ids
    # are turned into their names), whitespace-separated strings in a CSV cell.
    words_column: str = "tokens"
    tags_column: str = "tags"


@dataclass
class GenericModelConfig:
    init_from: str = ""  # a local transformers ModernBERT folder (ours from `cmbert export`, or a released one)
    max_length: int = 512  # tokens per text, [CLS] and [SEP] included; longer texts are cut (counted in the report)
    classifier_pooling: Literal["cls", "mean"] = "cls"  # classify: transformers' ModernBERT default is cls
    attention_backend: AttentionBackend = "auto"
    lora: LoraSettings = field(default_factory=LoraSettings)  # adapters instead of full fine-tuning
    prune: PruneSettings = field(default_factory=PruneSettings)  # layers dropped before fine-tuning


@dataclass
class GenericEvalConfig:
    threshold: float = 0.5  # classify, multi_label: a label is predicted when its probability reaches this


@dataclass
class GenericConfig(ConfigBase):
    task: Literal["classify", "tokens"] | None = None  # set by the command; a preset may name its task
    out: str = "runs/generic"
    data: GenericDataConfig = field(default_factory=GenericDataConfig)
    model: GenericModelConfig = field(default_factory=GenericModelConfig)
    train: TrainSection = field(default_factory=TrainSection)
    eval: GenericEvalConfig = field(default_factory=GenericEvalConfig)
    logging: LoggingSection = field(default_factory=LoggingSection)



def check_generic_config(cfg: GenericConfig) -> None:
    """Every value that would fail later fails here, naming its key."""
    d, m, t = cfg.data, cfg.model, cfg.train
    if cfg.task not in TASKS:
        raise ConfigError(f"task: expected one of {', '.join(TASKS)}, got {cfg.task!r}")
    check_split_paths(d, "a .csv / .jsonl file or a local `datasets` folder", "model selection and early stopping")
    if d.text_pair_column is not None and cfg.task != "classify":
        raise ConfigError("data.text_pair_column: sentence pairs are read by `cmbert finetune classify` only")
    if d.text_pair_column is not None and d.text_pair_column in ("", d.text_column):
        raise ConfigError(f"data.text_pair_column must name a column other than data.text_column "
                          f"({d.text_column!r}), not {d.text_pair_column!r}")
    if d.label_delimiter is not None and not d.multi_label:
        raise ConfigError("data.label_delimiter: only read with data.multi_label=true")
    if d.label_delimiter == "":
        raise ConfigError("data.label_delimiter is empty (YAML reads a bare | as an empty block: quote it, "
                          "data.label_delimiter=\"'|'\" on a shell command line)")
    check_encoder_folder(m.init_from)
    if m.max_length < 8:
        raise ConfigError(f"model.max_length must be >= 8, not {m.max_length}")
    context = json.loads(Path(m.init_from, "config.json").read_text()).get("max_position_embeddings")
    if context and m.max_length > context:
        raise ConfigError(f"model.max_length ({m.max_length}) exceeds the encoder's context ({context} tokens, "
                          f"max_position_embeddings in {m.init_from}/config.json)")
    check_lora_settings(m.lora, "model.lora")
    check_prune_settings(m.prune, "model.prune")
    check_train_settings(t)
    if not 0 < cfg.eval.threshold < 1:
        raise ConfigError(f"eval.threshold must be in (0, 1), not {cfg.eval.threshold}")
    if cfg.logging.every_steps < 1:
        raise ConfigError("logging.every_steps must be >= 1")


def load_generic_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
                        task: str | None = None) -> GenericConfig:
    """A preset with overrides, for the command's `task`: a preset of the other task is a ConfigError."""
    cfg = load_dataclass(GenericConfig, path, overrides)
    if task is not None:
        if cfg.task is not None and cfg.task != task:
            raise ConfigError(f"task: {path} is a `{cfg.task}` preset; run it with `cmbert finetune {cfg.task} train`")
        cfg.task = task
    check_generic_config(cfg)
    return cfg
