"""`cmbert finetune federated ...`. COMMANDS and GROUPS are literals that `cmbert.cli` reads without importing this
package (the format is in its docstring); the two commands' entry functions are below."""

from __future__ import annotations

import importlib.util
import json
from typing import Literal

GROUPS = {("finetune", "federated"): "ICD coding from frozen note embeddings: MLP heads trained centrally and "
                                     "federated over simulated hospitals with Flower (FedAvg / FedProx)"}

COMMANDS = {
    ("finetune", "federated", "train"): {
        "config": "cmbert.finetune.federated.config:load_federated_config",
        "run": "cmbert.finetune.federated.commands:train",
        "show": "cmbert.finetune.federated.train:format_table",
        "example": "cmbert finetune federated train --config configs/finetune/federated/demo.yaml "
                   "data=runs/demo/icd-data embedding.init_from=runs/demo/model federated.clients=8 "
                   "federated.strategy=fedprox",
        "help": "embed the ICD dataset's notes once, train the heads centrally and in a Flower simulation (IID and "
                "non-IID sites) on the same splits; writes report.json, models, results",
    },
    ("finetune", "federated", "site"): {
        "run": "cmbert.finetune.federated.commands:site",
        "show": "cmbert.finetune.federated.commands:format_site",
        "help": "one hospital's site file for a real federation: its own ICD dataset's train and val notes embedded, "
                "its codes mapped onto the federation's labels.json",
    },
}


def train(cfg) -> dict:
    """`cmbert.finetune.federated.train.main`, once Flower's simulation runtime is known to be installed."""
    from cmbert.core.errors import UserError

    if importlib.util.find_spec("flwr") is None or importlib.util.find_spec("ray") is None:
        raise UserError("the federated recipe needs Flower's simulation runtime: pip install -e '.[fl]' "
                        "(flwr[simulation]; `make setup` installs it)")
    from cmbert.finetune.federated.train import main

    return main(cfg)


def site(data: str, labels: str, model: str, out: str, pooling: Literal["mean", "cls", "chunk_mean"] = "mean",
         max_tokens: int = 8192, chunk_length: int = 0, cache: str | None = None,
         device: Literal["auto", "cpu", "cuda"] = "auto") -> dict:
    """A site file (`cmbert.finetune.federated.data.build_site`) embedded as the federation's EmbeddingConfig says.

    Args:
        data: the site's own `cmbert finetune icd prepare` folder
        labels: the label list every site shares (a labels.json, or a dataset folder holding one)
        model: the encoder every site embeds with (a local folder)
        out: the site file (.npz) its SuperNode reads (node config data-path)
        pooling: as the federation agreed
        max_tokens: tokens read per note
        chunk_length: tokens per chunk; 0: the model's context
        cache: embedding cache (default: $CMBERT_CACHE/embeddings)
        device: where the encoder runs

    Example: cmbert finetune federated site --data /site/icd10-data --labels federation/labels.json --model
        models/clinical-modernbert --out /site/site.npz
    """
    from pathlib import Path

    from cmbert.core.runtime import default_cache_dir
    from cmbert.finetune.federated.config import EmbeddingConfig
    from cmbert.finetune.federated.data import build_site
    from cmbert.finetune.federated.train import embedder

    embedding = EmbeddingConfig(init_from=model, pooling=pooling, max_tokens=max_tokens, chunk_length=chunk_length)
    folder = Path(cache) if cache else default_cache_dir() / "embeddings"
    return build_site(data, labels, embedder(embedding, folder, device), out)


def format_site(report: dict) -> str:
    return json.dumps(report, indent=1)
