"""A tokenizer folder as our exports write it and as runs identify it (the hash that ties shards, caches and runs
to the tokenizer that made them)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from transformers import PreTrainedTokenizerFast

from cmbert.core.io import ReadError


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: str | Path) -> None:
    """`save_pretrained`, loadable by transformers 4.x as well: transformers 5 records the class as
    `TokenizersBackend`, which 4.x does not know, while `PreTrainedTokenizerFast` loads the same tokenizer.json in
    both (4.57 and 5.x then give identical ids and fill-mask results)."""
    tokenizer.save_pretrained(folder)
    path = Path(folder) / "tokenizer_config.json"
    data = json.loads(path.read_text())
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def tokenizer_file(tokenizer: str | Path) -> Path:
    """`tokenizer.json` inside a tokenizer folder (or the file itself)."""
    path = Path(tokenizer)
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise ReadError(f"{tokenizer}: no tokenizer.json (save one with cmbert.pretrain.tokenizer.save_tokenizer)")
    return path


def tokenizer_sha256(tokenizer: str | Path) -> str:
    """What a manifest records, and training checks, to tie shards to the tokenizer that made them."""
    return hashlib.sha256(tokenizer_file(tokenizer).read_bytes()).hexdigest()
