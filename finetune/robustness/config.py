"""The settings of `cmbert audit robustness`: one typed config, its defaults in configs/audit/robustness.yaml.

    cfg = load_audit_config(None, ["mimic=runs/demo/mimic", "model=runs/demo/model", "out=runs/demo/robustness"])

`load_audit_config` reads a YAML file (default: that preset), applies dotted `key=value` overrides (the command's
flags are overrides too) and checks every key, naming it in the `ConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cmbert.core.config import ConfigError, Precision, check_ranges, load_dataclass, require_keys

PRESET = "configs/audit/robustness.yaml"
SPLITS = ("train", "val", "test")  # an ICD dataset's (cmbert.data.icd_dataset.SPLITS)


@dataclass
class AuditConfig:
    """What `cmbert.finetune.robustness.audit.run_audit` takes, as a config.

    Args:
        mimic: the MIMIC-IV root (hosp/diagnoses_icd, note/discharge); required
        out: output folder (perturbed note text stays in it); required
        model: the encoder folder to audit (default: the icd_model's encoder)
        icd_model: a model folder from `cmbert finetune icd train`: its code-set change is reported beside LDFR
        data: a `cmbert finetune icd prepare` folder: held-out notes from its splits (default: our own seeded
            patient split of mimic)
        splits: the data splits to read (train, val, test; a flag takes them comma-separated too)
        max_notes: held-out notes sampled (null: every one)
        seed: sampling, perturbations, split
        edits: spans each operator changes per note
        pooling: the note embedding's pooling
        components: PCA components (at most n-1)
        classifier: the classifier in PCA space
        min_class_notes: gold classes with fewer notes merge into 'other'
        test_size: patient fraction held out by our own split when data is not given
        bootstrap: bootstrap resamples for CIs
        max_tokens: tokens read per note
        chunk_length: tokens per chunk (default: the model's context)
        cache: embedding cache (default: $CMBERT_CACHE/embeddings)
        device: where the encoder runs
        precision: fp32 (bf16 rounding is a sizeable fraction of a one-word displacement), bf16 or auto
        overwrite: replace an earlier audit in out

    Example: cmbert audit robustness --mimic runs/demo/mimic --data runs/demo/icd-data --model runs/demo/model
        --icd-model runs/demo/icd/runs/model-8k-seed0/model --out runs/demo/robustness
    """

    mimic: str | None = None
    out: str | None = None
    model: str | None = None
    icd_model: str | None = None
    data: str | None = None
    splits: list[str] = field(default_factory=lambda: ["test"])
    max_notes: int | None = 300
    seed: int = 0
    edits: int = 1
    pooling: Literal["mean", "cls", "chunk_mean"] = "mean"
    components: int = 16
    classifier: Literal["logistic", "centroid"] = "logistic"
    min_class_notes: int = 10
    test_size: float = 0.15
    bootstrap: int = 1000
    max_tokens: int = 8192
    chunk_length: int | None = None
    cache: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Precision = "fp32"
    overwrite: bool = False


def check_audit_config(cfg: AuditConfig) -> None:
    require_keys(cfg, ("mimic", "out"), "DIR")
    if not cfg.model and not cfg.icd_model:
        raise ConfigError("model: give an encoder folder, or icd_model (whose encoder is then used)")
    cfg.splits = [s.strip() for item in cfg.splits for s in item.split(",") if s.strip()]
    if not cfg.splits or any(s not in SPLITS for s in cfg.splits):
        raise ConfigError(f"splits: expected some of {', '.join(SPLITS)}, got {cfg.splits}")
    # max_notes and chunk_length: 0 (like unset) means all notes / the model's context.
    check_ranges(cfg, "", {"edits": ">= 1", "components": ">= 1", "max_tokens": ">= 1", "max_notes": ">= 0",
                           "chunk_length": ">= 0", "min_class_notes": ">= 2", "bootstrap": ">= 0",
                           "test_size": "in (0, 0.9)"})


def load_audit_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> AuditConfig:
    """The preset (or `path`) with dotted overrides, checked; a ConfigError names the first bad key."""
    cfg = load_dataclass(AuditConfig, PRESET if path is None else path, overrides)
    check_audit_config(cfg)
    return cfg
