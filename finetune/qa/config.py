"""The config of `cmbert finetune qa train`: typed dataclasses, YAML presets in `configs/finetune/qa/`, dotted
overrides.

    cfg = load_qa_config("configs/finetune/qa/demo.yaml", ["train.lr=3e-5", "model.doc_stride=64"])

The training and logging sections are the generic recipes' (`cmbert.finetune.generic.config`), so the optimizer, schedule,
resume and logging behave as in `cmbert finetune classify|tokens train`; the data, model and eval sections are QA's.
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
    Precision,
    TrainSection,
    check_encoder_folder,
    check_ranges,
    check_split_paths,
    check_train_settings,
    load_dataclass,
    require_keys,
)
from cmbert.core.lora import LoraSettings, check_lora_settings
from cmbert.core.pruning import PruneSettings, check_prune_settings

MAX_CONTEXT = 8192  # ModernBERT's longest context; a window never exceeds the encoder's own either


@dataclass
class QaDataConfig:
    # A SQuAD-layout .json (v1.1 or v2.0; RadQA ships in the v2.0 layout), a .jsonl of flat records
    # {"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}} (the `datasets` squad
    # layout; a list of {"text", "answer_start"} objects is read too), either one gzipped, or a local `datasets`
    # folder of such records (a DatasetDict folder gives the split of each role).
    train: str = ""
    validation: str | None = None  # model selection and the no-answer threshold read it
    test: str | None = None
    format: Literal["auto", "squad", "jsonl", "datasets"] = "auto"  # auto: by the file name, a folder is `datasets`
    # SQuAD v2.0 / RadQA: questions without an answer in the context are kept and the model may answer "" (the
    # [CLS] token). false (SQuAD v1.1): every question has an answer; unanswerable ones are skipped and counted.
    unanswerable: bool = True


@dataclass
class QaModelConfig:
    init_from: str = ""  # a local transformers ModernBERT folder (ours from `cmbert export`, or a released one)
    # Tokens per window: [CLS] question [SEP] context piece [SEP]. A longer context is read in several windows; up to
    # the encoder's max_position_embeddings (8,192 for ModernBERT, enough for most radiology reports in one window).
    max_length: int = 512
    # Context tokens consecutive windows share (transformers' `stride`, run_qa.py's --doc_stride): an answer that
    # crosses one window's edge lies whole in the next one when it is at most this long.
    doc_stride: int = 128
    max_question_tokens: int = 64  # longer questions keep their first tokens (counted as truncated_questions)
    attention_backend: AttentionBackend = "auto"
    lora: LoraSettings = field(default_factory=LoraSettings)  # adapters instead of full fine-tuning
    prune: PruneSettings = field(default_factory=PruneSettings)  # layers dropped before fine-tuning


@dataclass
class QaEvalConfig:
    max_answer_tokens: int = 30  # the longest span predicted (transformers' max_answer_length)
    n_best: int = 20  # spans kept per question in predict's n-best list
    # The answer is "" when (null score - best span score) is above this. null (default): tuned on validation as the
    # official SQuAD v2 best_f1_thresh, then applied to test and stored with the model; a number fixes it (0.0 is
    # transformers' run_qa default).
    null_threshold: float | None = None
    batch_size: int = 64  # windows per forward pass in evaluation (lower it for windows of thousands of tokens)


@dataclass
class QaConfig(ConfigBase):
    out: str = "runs/qa"
    data: QaDataConfig = field(default_factory=QaDataConfig)
    model: QaModelConfig = field(default_factory=QaModelConfig)
    train: TrainSection = field(default_factory=TrainSection)  # batch_size: windows per step
    eval: QaEvalConfig = field(default_factory=QaEvalConfig)
    logging: LoggingSection = field(default_factory=lambda: LoggingSection(
        project="clinical-modernbert-qa"))



def check_qa_config(cfg: QaConfig) -> None:
    """Every value that would fail later fails here, naming its key."""
    d, m, t, e = cfg.data, cfg.model, cfg.train, cfg.eval
    check_split_paths(d, "a SQuAD .json, a .jsonl or a local `datasets` folder",
                      "model selection and the no-answer threshold")
    check_encoder_folder(m.init_from)
    context = json.loads(Path(m.init_from, "config.json").read_text()).get("max_position_embeddings") or MAX_CONTEXT
    if not 16 <= m.max_length <= min(context, MAX_CONTEXT):
        raise ConfigError(f"model.max_length must be in [16, {min(context, MAX_CONTEXT)}] (the encoder's context, "
                          f"max_position_embeddings in {m.init_from}/config.json), not {m.max_length}")
    if m.max_question_tokens < 1:
        raise ConfigError(f"model.max_question_tokens must be >= 1, not {m.max_question_tokens}")
    room = m.max_length - m.max_question_tokens - 3  # [CLS], [SEP], [SEP]
    if room < 8:
        raise ConfigError(f"model.max_question_tokens ({m.max_question_tokens}) leaves {room} context tokens per "
                          f"window of model.max_length {m.max_length}; at least 8 are needed")
    if not 0 <= m.doc_stride < room:
        raise ConfigError(f"model.doc_stride must be in [0, {room}) (context tokens per window: max_length - "
                          f"max_question_tokens - 3), not {m.doc_stride}")
    check_lora_settings(m.lora, "model.lora")
    check_prune_settings(m.prune, "model.prune")
    check_train_settings(t)
    check_ranges(e, "eval", {"max_answer_tokens": ">= 1", "n_best": ">= 1", "batch_size": ">= 1"})
    if e.null_threshold is not None and not d.unanswerable:
        raise ConfigError("eval.null_threshold: only read with data.unanswerable=true (SQuAD v1.1 always answers)")
    if cfg.logging.every_steps < 1:
        raise ConfigError("logging.every_steps must be >= 1")


def load_qa_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> QaConfig:
    cfg = load_dataclass(QaConfig, path, overrides)
    check_qa_config(cfg)
    return cfg


@dataclass
class QaPredictConfig:
    """The settings of `cmbert predict qa` (defaults: configs/predict/qa.yaml). Window and span settings left null
    are the model's own (its qa_settings.json, written by training).

    Args:
        model: a model folder from `cmbert finetune qa train` (or any local transformers ModernBERT QA folder);
            required
        input: a SQuAD-layout .json, a .jsonl of {id, question, context} records, or a local `datasets` folder; gold
            answers optional; required
        out: FILE.jsonl: {id, answer, start, end, scores, n_best} per question; required
        format: the input's layout (auto: from its name)
        max_length: tokens per window (default: the model's training value)
        doc_stride: tokens shared by consecutive windows (default: the model's)
        null_threshold: answer "" when null score - best span score is above this (default: the threshold tuned on
            validation)
        max_answer_tokens: longest answer in tokens (default: the model's)
        n_best: spans listed per question (default: the model's)
        batch_size: windows per forward pass
        device: where the model runs
        precision: auto (bf16 autocast on GPUs and on CPUs with native bf16, else fp32), fp32 or bf16

    Example: cmbert predict qa --model runs/qa-demo/model --input runs/qa-data/test.json --out answers.jsonl
    """

    model: str | None = None
    input: str | None = None
    out: str | None = None
    format: Literal["auto", "squad", "jsonl", "datasets"] = "auto"
    max_length: int | None = None
    doc_stride: int | None = None
    null_threshold: float | None = None
    max_answer_tokens: int | None = None
    n_best: int | None = None
    batch_size: int = 32
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Precision = "auto"


def load_qa_predict_config(path: str | Path | None = None,
                           overrides: list[str] | tuple[str, ...] = ()) -> QaPredictConfig:
    """configs/predict/qa.yaml (or `path`) with dotted overrides, checked key by key."""
    cfg = load_dataclass(QaPredictConfig, "configs/predict/qa.yaml" if path is None else path, overrides)
    require_keys(cfg, ("model", "input", "out"))
    check_ranges(cfg, "", {"max_length": ">= 1", "max_answer_tokens": ">= 1", "n_best": ">= 1", "batch_size": ">= 1",
                           "doc_stride": ">= 0"})
    return cfg
