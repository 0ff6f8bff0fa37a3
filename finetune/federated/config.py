"""The frozen-embedding / federated ICD config: typed dataclasses, YAML presets in `configs/finetune/federated/`,
dotted overrides.

    cfg = load_federated_config("configs/finetune/federated/demo.yaml", ["federated.clients=3", "heads=[mlp]"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cmbert.core.config import ConfigBase, ConfigError, Precision, check_ranges, load_dataclass, within

HEADS = ("linear", "mlp", "mlp2")  # finetune/federated/heads.py
PARTITIONS = ("iid", "dirichlet")  # finetune/federated/data.py
STRATEGIES = ("fedavg", "fedprox")


@dataclass
class EmbeddingConfig:
    # Any local transformers folder: ours, a released ModernBERT, or another family (BERT, E5, BGE ...).
    init_from: str = ""
    pooling: Literal["mean", "cls", "chunk_mean"] = "mean"
    max_tokens: int = 8192  # a longer note is cut
    chunk_length: int = 0  # tokens per encoder chunk; 0: the model's context
    precision: Precision = "auto"
    cache: str = ""  # the embedding cache; "" = <out>/cache (keyed by model hash and text: reruns embed nothing)


@dataclass
class HeadConfig:
    hidden_size: int = 512  # mlp and mlp2
    dropout: float = 0.2


@dataclass
class TrainConfig:
    """Both settings train with these; a federated round is `federated.local_epochs` epochs at each client."""

    # Per design: a linear head on standardized embeddings takes 10x the step an MLP tolerates before it overfits in a
    # few epochs (synthetic ICD-10, 2,600 training notes: BENCHMARKS.md).
    lr: dict[str, float] = field(default_factory=lambda: {"linear": 1e-2, "mlp": 1e-3, "mlp2": 1e-3})
    weight_decay: float = 1e-4
    batch_size: int = 64
    epochs: int = 30  # centralized; the federated run gets rounds x local_epochs passes over each client's data
    seed: int = 0


@dataclass
class FederatedSettings:
    clients: int = 4
    rounds: int = 30
    local_epochs: int = 1
    strategy: Literal["fedavg", "fedprox"] = "fedavg"
    # FedProx adds mu / 2 ||w - w_global||^2 to a BCE averaged over every label (~0.08 here): mu 0.01 outweighed it and
    # cost 0.09 micro-F1 on Dirichlet sites, 1e-4 did not (BENCHMARKS.md).
    proximal_mu: float = 1e-4
    fraction_train: float = 1.0  # share of clients sampled each round
    partitions: list[str] = field(default_factory=lambda: list(PARTITIONS))
    # Label skew: each client's share of the patients whose primary code is c ~ Dirichlet(alpha); small alpha, strong skew.
    dirichlet_alpha: float = 0.5
    client_cpus: float = 1.0  # Ray resources per simulated client (2 cores: two clients train at a time)


@dataclass
class SplitsConfig:
    """Split 0 is the dataset's own (split.csv); splits 1.. re-draw train/val/test patients with the same iterative
    stratification and fractions (Xu & Dray average over ten random stratified splits)."""

    count: int = 3
    seed: int = 0


@dataclass
class FederatedConfig(ConfigBase):
    out: str = "runs/federated"
    data: str = ""  # a `cmbert finetune icd prepare` folder
    device: str = "auto"
    heads: list[str] = field(default_factory=lambda: list(HEADS))
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    federated: FederatedSettings = field(default_factory=FederatedSettings)
    splits: SplitsConfig = field(default_factory=SplitsConfig)



def check_federated_config(cfg: FederatedConfig) -> None:
    """Every value that would fail later fails here, naming its key."""
    if not cfg.data or not Path(cfg.data, "labels.json").is_file():
        raise ConfigError(f"data: {cfg.data!r} is not an ICD dataset folder (cmbert finetune icd prepare --out DIR)")
    if not cfg.embedding.init_from or not Path(cfg.embedding.init_from, "config.json").is_file():
        raise ConfigError(f"embedding.init_from: {cfg.embedding.init_from!r} has no config.json (a local transformers folder "
                          "is needed; the hub is not used)")
    for name, allowed, values in (("heads", HEADS, cfg.heads), ("federated.partitions", PARTITIONS,
                                                                 cfg.federated.partitions)):
        unknown = sorted(set(values) - set(allowed))
        if unknown or not values:
            raise ConfigError(f"{name}: give one or more of {', '.join(allowed)}" +
                              (f" (unknown {unknown[0]!r})" if unknown else ""))
    e, h, t, f = cfg.embedding, cfg.head, cfg.train, cfg.federated
    check_ranges(e, "embedding", {"max_tokens": ">= 1"})
    if e.chunk_length < 0 or 0 < e.chunk_length < 3:
        raise ConfigError(f"embedding.chunk_length: must be 0 (the model's context) or >= 3, got {e.chunk_length}")
    check_ranges(h, "head", {"hidden_size": ">= 1", "dropout": "in [0, 1)"})
    missing = [design for design in cfg.heads if design not in t.lr]
    if missing:
        raise ConfigError(f"train.lr: give every head in heads a learning rate > 0 (missing: {missing})")
    for design in cfg.heads:
        if not within(t.lr[design], "> 0"):
            raise ConfigError(f"train.lr.{design}: must be > 0, got {t.lr[design]!r}")
    check_ranges(t, "train", {"weight_decay": ">= 0", "batch_size": ">= 1", "epochs": ">= 1"})
    check_ranges(f, "federated", {"clients": ">= 2", "rounds": ">= 1", "local_epochs": ">= 1"})
    if f.strategy not in STRATEGIES:
        raise ConfigError(f"federated.strategy: choose from {', '.join(STRATEGIES)}")
    check_ranges(f, "federated", {"proximal_mu": ">= 0", "fraction_train": "in (0, 1]", "dirichlet_alpha": "> 0",
                                  "client_cpus": "> 0"})
    check_ranges(cfg.splits, "splits", {"count": ">= 1"})


def load_federated_config(path: str | Path | None = None,
                          overrides: list[str] | tuple[str, ...] = ()) -> FederatedConfig:
    cfg = load_dataclass(FederatedConfig, path, overrides)
    check_federated_config(cfg)
    return cfg
