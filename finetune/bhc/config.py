"""The settings of `cmbert bhc prepare | summarize | evaluate`: one typed config per command, its defaults in
configs/bhc/{prepare,summarize,evaluate}.yaml.

    cfg = load_summarize_config(None, ["data=runs/bhc", "method=lead", "out=runs/bhc-lead"])

Each loader reads a YAML file (default: the command's preset), applies dotted `key=value` overrides (the command's
flags are overrides too) and checks every key, naming it in the `ConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cmbert.core.config import ConfigError, Precision, check_ranges, load_dataclass, require_keys

Split = Literal["train", "validation", "test"]


@dataclass
class BhcPrepareConfig:
    """What `cmbert.finetune.bhc.prepare.prepare_bhc_dataset` takes (its `CleaningRules` flattened), as a config.

    Args:
        mimic: MIMIC-IV root with note/discharge.csv.gz, or a discharge CSV(.gz) file; required
        out: the dataset folder (not inside mimic); required
        tokenizer: a local tokenizer or model folder: token lengths and the fit-by-budget table (default: words and
            characters only)
        source_sections: all: the rest of the note (the paper's source); before: only the sections before the BHC
            (no Discharge Diagnosis / Instructions leaking it)
        min_target_words: shorter BHCs are skipped
        min_source_words: shorter sources are skipped
        deid_token: replace MIMIC's ___ placeholders with this token, e.g. [DEID] (default: keep ___)
        seed: split seed
        split_from: split.csv file(s) of other tasks (e.g. the ICD dataset's): their patients keep their split,
            unlisted ones go to train
        overwrite: replace a BHC dataset already in out

    Example: cmbert bhc prepare --mimic runs/demo/mimic --out runs/bhc --tokenizer runs/demo/model
    """

    mimic: str | None = None
    out: str | None = None
    tokenizer: str | None = None
    source_sections: Literal["all", "before"] = "all"
    min_target_words: int = 20
    min_source_words: int = 100
    deid_token: str | None = None
    seed: int = 10
    split_from: list[str] | None = None
    overwrite: bool = False


@dataclass
class BhcSummarizeConfig:
    """What `cmbert.finetune.bhc.summarize.summarize` takes, as a config.

    Args:
        data: a `cmbert bhc prepare` folder; required
        model: encoder folder (needed by centrality and scorer)
        method: lead, oracle, centrality or scorer; required
        out: the run folder (summaries/, report.json, the scorer); required
        splits: splits to summarise
        length: a fixed budget of N words per summary (default: median target/source word ratio on train x source
            words, clipped to train's p10-p90)
        cache: sentence-embedding cache folder (default: OUT/embeddings; share one between runs to embed once)
        max_train_notes: train notes read for the length rule and the scorer
        max_validation_notes: validation notes that choose the scorer's label and head
        precision: auto (bf16 autocast on GPUs and on CPUs with native bf16, else fp32), fp32 or bf16
        seed: the scorer's seed

    Example: cmbert bhc summarize --data runs/bhc --model runs/demo/model --method scorer --out runs/bhc-scorer
    """

    data: str | None = None
    model: str | None = None
    method: Literal["lead", "oracle", "centrality", "scorer"] | None = None
    out: str | None = None
    splits: list[Split] = field(default_factory=lambda: ["validation", "test"])
    length: int | None = None
    cache: str | None = None
    max_train_notes: int = 1000
    max_validation_notes: int = 500
    precision: Precision = "fp32"
    seed: int = 0


@dataclass
class BhcEvaluateConfig:
    """What `cmbert.finetune.bhc.evaluate.evaluate` takes, as a config.

    Args:
        data: the `cmbert bhc prepare` folder the runs summarised; required
        split: the split to score
        summaries: run folders of `cmbert bhc summarize`
        similarity_model: encoder folder for BERTScore (default: the encoder of the first run that used one; none:
            ROUGE only)
        layer: BERTScore layer, as bert_score's num_layers (default: last)
        idf: idf-weighted BERTScore (idf over the references)
        baselines: the lead-k and oracle rows (the flag --no-baselines leaves them out)
        bootstrap: bootstrap resamples
        seed: bootstrap seed
        workers: processes for ROUGE and the oracle baseline; 0: every core (one per 100 notes at most)
        out: report folder; required

    Example: cmbert bhc evaluate --data runs/bhc --split test --summaries runs/bhc-scorer runs/bhc-centrality
        --similarity-model runs/demo/model --out runs/bhc-eval
    """

    data: str | None = None
    split: Split = "test"
    summaries: list[str] = field(default_factory=list)
    similarity_model: str | None = None
    layer: int | None = None
    idf: bool = False
    baselines: bool = True
    bootstrap: int = 1000
    seed: int = 0
    workers: int = 0
    out: str | None = None


def load_prepare_config(path: str | Path | None = None,
                        overrides: list[str] | tuple[str, ...] = ()) -> BhcPrepareConfig:
    cfg = load_dataclass(BhcPrepareConfig, "configs/bhc/prepare.yaml" if path is None else path, overrides)
    require_keys(cfg, ("mimic", "out"), "VALUE")
    check_ranges(cfg, "", {"min_target_words": ">= 1", "min_source_words": ">= 1"})
    if cfg.deid_token is not None and not cfg.deid_token.strip():
        raise ConfigError("deid_token: must be a visible placeholder such as [DEID] (or null to keep ___)")
    return cfg


def load_summarize_config(path: str | Path | None = None,
                          overrides: list[str] | tuple[str, ...] = ()) -> BhcSummarizeConfig:
    cfg = load_dataclass(BhcSummarizeConfig, "configs/bhc/summarize.yaml" if path is None else path, overrides)
    require_keys(cfg, ("data", "method", "out"), "VALUE")
    if cfg.method in ("centrality", "scorer") and not cfg.model:
        raise ConfigError(f"model: method {cfg.method} needs an encoder folder (--model DIR)")
    if not cfg.splits:
        raise ConfigError("splits: give at least one split")
    check_ranges(cfg, "", {"length": ">= 1", "max_train_notes": ">= 1", "max_validation_notes": ">= 1"})
    return cfg


def load_evaluate_config(path: str | Path | None = None,
                         overrides: list[str] | tuple[str, ...] = ()) -> BhcEvaluateConfig:
    cfg = load_dataclass(BhcEvaluateConfig, "configs/bhc/evaluate.yaml" if path is None else path, overrides)
    require_keys(cfg, ("data", "out"), "VALUE")
    check_ranges(cfg, "", {"bootstrap": ">= 0", "workers": ">= 0", "layer": ">= 1"})
    return cfg
