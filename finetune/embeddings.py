"""Pooled note embeddings from a frozen ModernBERT encoder, cached on disk by model and text.

A note is tokenized without special tokens, cut at `max_tokens`, and read in chunks of `chunk_length` tokens ([CLS]
piece [SEP], each chunk its own document: `finetune.icd.batches.collate`), so notes longer than the encoder's context
are read whole. Pooling:
- ``mean``: the mean of the final hidden states of every token of every chunk (specials included), the usual
  sentence-embedding pooling for an MLM encoder without a trained [CLS];
- ``cls``: the mean over chunks of each chunk's [CLS] state.

The cache file is named by a hash of (the encoder's weights and tokenizer files, pooling, cut, chunk length, the
texts): a changed model or note gives a new file, never a stale vector. Used by the trajectory model (notes of past
visits, titles of codes) and by `cmbert embed`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

POOLINGS = ("mean", "cls")
_MODEL_FILES = ("model.safetensors", "pytorch_model.bin", "config.json", "tokenizer.json", "tokenizer_config.json")


def model_hash(folder: str | Path) -> str:
    """sha256 (16 hex) over the folder's weight, config and tokenizer files: what decides an embedding."""
    digest = hashlib.sha256()
    for name in _MODEL_FILES:
        path = Path(folder) / name
        if path.is_file():
            digest.update(name.encode())
            with open(path, "rb") as file:
                for block in iter(lambda: file.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def load_encoder(folder: str | Path, device: torch.device):
    """(frozen ModernBertModel in eval mode, tokenizer) of a local transformers ModernBERT folder."""
    from transformers import AutoTokenizer

    from modeling import ModernBertModel

    if not Path(folder, "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json (a local ModernBERT folder is needed; the hub is not used)")
    encoder = ModernBertModel.from_pretrained(folder).to(device).eval()
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    return encoder, AutoTokenizer.from_pretrained(folder)


@torch.no_grad()
def embed_texts(encoder, tokenizer, texts: Sequence[str], max_tokens: int, chunk_length: int, pooling: str = "mean",
                tokens_per_batch: int = 16384, dtype: torch.dtype = torch.float32, progress: bool = False
                ) -> np.ndarray:
    """[len(texts), hidden] float32 pooled embeddings (see the module docstring), in the texts' order."""
    from tqdm import tqdm

    from finetune.icd.batches import collate, token_budget_batches, tokenize_notes

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    if chunk_length < 3:
        raise ValueError(f"chunk_length must be at least 3 ([CLS] token [SEP]), got {chunk_length}")
    config = encoder.config
    device = next(encoder.parameters()).device
    notes = tokenize_notes(tokenizer, texts, max_tokens)
    out = np.zeros((len(notes), config.hidden_size), dtype=np.float32)
    batches = token_budget_batches(np.diff(notes.offsets), max(tokens_per_batch, chunk_length), max_notes=256)
    for idx in tqdm(batches, desc="embedding", unit="batch", disable=not progress):
        batch = collate([notes.note(i) for i in idx], chunk_length, config.cls_token_id, config.sep_token_id)
        cu = batch["cu_seqlens"].to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            h = encoder(input_ids=batch["input_ids"].to(device), cu_seqlens=cu,
                        max_seqlen=batch["max_seqlen"]).last_hidden_state.float()
        chunk_of_note = batch["note_chunks"].tolist()
        for row, i in enumerate(idx):
            first, last = chunk_of_note[row], chunk_of_note[row + 1]
            if pooling == "mean":
                vector = h[cu[first]:cu[last]].mean(0)
            else:
                vector = h[cu[first:last].long()].mean(0)
            out[i] = vector.cpu().numpy()
    return out


def cached_embeddings(cache_dir: str | Path, encoder_folder: str | Path, texts: Sequence[str], max_tokens: int,
                      chunk_length: int, pooling: str = "mean", device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32, progress: bool = False, encoder=None) -> np.ndarray:
    """`embed_texts` with a disk cache (see the module docstring); loads the encoder only on a miss unless given
    `encoder=(model, tokenizer)`."""
    digest = hashlib.sha256(json.dumps({"model": model_hash(encoder_folder), "pooling": pooling, "cut": max_tokens,
                                        "chunk": chunk_length}).encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
    path = Path(cache_dir) / f"embeddings-{digest.hexdigest()[:20]}.npy"
    if path.is_file():
        return np.load(path)
    device = device or torch.device("cpu")
    model, tokenizer = encoder if encoder is not None else load_encoder(encoder_folder, device)
    vectors = embed_texts(model, tokenizer, texts, max_tokens, chunk_length, pooling, dtype=dtype, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors
