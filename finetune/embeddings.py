"""Pooled note embeddings from a frozen ModernBERT encoder, cached on disk by model and text.

A note is tokenized without special tokens, cut at `max_tokens`, and read in chunks of `chunk_length` tokens ([CLS]
piece [SEP], each chunk its own document: `finetune.icd.batches.collate`), so notes longer than the encoder's context
are read whole. Pooling:
- ``mean``: the mean of the final hidden states of every token of every chunk (specials included), the usual
  sentence-embedding pooling for an MLM encoder without a trained [CLS];
- ``cls``: the mean over chunks of each chunk's [CLS] state;
- segments (`embed_segments`): the mean states of consecutive `segment_tokens`-token pieces, one vector each, so a
  reader downstream can attend to the sentence that matters instead of an average over 5,000 tokens.

The cache file is named by a hash of (the encoder's weights and tokenizer files, pooling, cut, chunk length, the
texts): a changed model or note gives a new file, never a stale vector. Used by the trajectory model (notes of past
visits, titles of codes) and by `cmbert embed`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

POOLINGS = ("mean", "cls")
BLOCK_TEXTS = 2048  # texts per saved block of `cached_embeddings` (what a killed run can lose)
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


def quiet_from_pretrained(cls, folder: str | Path, **kwargs):
    """`cls.from_pretrained(folder)` without transformers' load report. Our loader is strict and raises on any key
    that is wrong; the report would only list the MLM head's keys an encoder does not use, which reads like an error."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return cls.from_pretrained(folder, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)


def load_encoder(folder: str | Path, device: torch.device, trainable: bool = False):
    """(ModernBertModel, tokenizer) of a local transformers ModernBERT folder: frozen in eval mode, or with
    `trainable` in train mode with gradients (fine-tuned with a downstream model)."""
    from transformers import AutoTokenizer

    from modeling import ModernBertModel

    if not Path(folder, "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json (a local ModernBERT folder is needed; the hub is not used)")
    encoder = quiet_from_pretrained(ModernBertModel, folder).to(device).train(trainable)
    for parameter in encoder.parameters():
        parameter.requires_grad_(trainable)
    return encoder, AutoTokenizer.from_pretrained(folder)


def piece_means(states: torch.Tensor, lengths: torch.Tensor, segment_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Notes laid end to end in `states` [total, hidden] (`lengths` [n] tokens each) -> (the mean state of each
    consecutive `segment_tokens`-token piece of each note [n_pieces, hidden], pieces per note [n]). Differentiable:
    the trajectory model runs it on a fine-tuned encoder's states."""
    device = states.device
    lengths = lengths.to(device=device, dtype=torch.long)
    note_of = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    per_note = (lengths + segment_tokens - 1) // segment_tokens
    piece = (torch.cumsum(per_note, 0) - per_note)[note_of] + (
        torch.arange(len(states), device=device) - starts[note_of]) // segment_tokens
    total = int(per_note.sum())
    sums = torch.zeros(total, states.shape[1], device=device, dtype=states.dtype).index_add(0, piece, states)
    counts = torch.bincount(piece, minlength=total).clamp_min(1).to(states.dtype)
    return sums / counts.unsqueeze(1), per_note


@torch.no_grad()
def _note_states(encoder, notes, chunk_length: int, tokens_per_batch: int, dtype: torch.dtype, progress: bool):
    """(note index, final states of all its chunks' tokens [n_tokens, hidden] fp32, chunk starts) for every note of
    `notes` (`finetune.icd.batches.TokenizedNotes`)."""
    from tqdm import tqdm

    from finetune.icd.batches import collate, token_budget_batches

    if chunk_length < 3:
        raise ValueError(f"chunk_length must be at least 3 ([CLS] token [SEP]), got {chunk_length}")
    config = encoder.config
    device = next(encoder.parameters()).device
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
            yield int(i), h[cu[first]:cu[last]], (cu[first:last] - cu[first]).long()


def embed_texts(encoder, tokenizer, texts: Sequence[str], max_tokens: int, chunk_length: int, pooling: str = "mean",
                tokens_per_batch: int = 16384, dtype: torch.dtype = torch.float32, progress: bool = False
                ) -> np.ndarray:
    """[len(texts), hidden] float32 pooled embeddings (see the module docstring), in the texts' order."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    from finetune.icd.batches import tokenize_notes

    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    notes = tokenize_notes(tokenizer, texts, max_tokens)
    for i, h, starts in _note_states(encoder, notes, chunk_length, tokens_per_batch, dtype, progress):
        out[i] = (h.mean(0) if pooling == "mean" else h[starts].mean(0)).cpu().numpy()
    return out


def embed_segments(encoder, tokenizer, texts: Sequence[str], max_tokens: int, chunk_length: int,
                   segment_tokens: int, tokens_per_batch: int = 16384, dtype: torch.dtype = torch.float32,
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each note as the mean states of consecutive `segment_tokens`-token pieces (read in context: the encoder sees
    whole chunks), so one sentence is not averaged away over a long note: (vectors [total_segments, hidden] fp16,
    offsets int64 [len(texts) + 1]; note i is vectors[offsets[i]:offsets[i + 1]])."""
    from finetune.icd.batches import tokenize_notes

    return segments_of_tokens(encoder, tokenize_notes(tokenizer, texts, max_tokens), chunk_length, segment_tokens,
                              tokens_per_batch=tokens_per_batch, dtype=dtype, progress=progress)


def segments_of_tokens(encoder, notes, chunk_length: int, segment_tokens: int, rows=None,
                       tokens_per_batch: int = 16384, dtype: torch.dtype = torch.float32, progress: bool = False
                       ) -> tuple[np.ndarray, np.ndarray]:
    """`embed_segments` of already tokenized notes (`TokenizedNotes`); with `rows`, only those notes are read and the
    others get no pieces (offsets still cover every note)."""
    from finetune.icd.batches import TokenizedNotes

    if segment_tokens < 1:
        raise ValueError(f"segment_tokens must be >= 1, got {segment_tokens}")
    wanted = np.arange(len(notes)) if rows is None else np.asarray(sorted(set(rows)), dtype=np.int64)
    lengths = np.diff(notes.offsets)[wanted]
    subset = TokenizedNotes(np.concatenate([notes.note(i) for i in wanted]) if len(wanted) else notes.ids[:0],
                            np.concatenate(([0], np.cumsum(lengths))).astype(np.int64), lengths)
    pieces: list[np.ndarray] = [np.zeros((0, encoder.config.hidden_size), np.float16)] * len(notes)
    for i, h, _ in _note_states(encoder, subset, chunk_length, tokens_per_batch, dtype, progress):
        means, _ = piece_means(h, torch.tensor([len(h)]), segment_tokens)
        pieces[wanted[i]] = means.cpu().numpy().astype(np.float16)
    offsets = np.zeros(len(notes) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in pieces], out=offsets[1:])
    hidden = encoder.config.hidden_size
    return (np.concatenate(pieces) if pieces else np.zeros((0, hidden), np.float16)), offsets


def cached_embeddings(cache_dir: str | Path, encoder_folder: str | Path, texts: Sequence[str], max_tokens: int,
                      chunk_length: int, pooling: str = "mean", device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32, progress: bool = False, encoder=None,
                      segment_tokens: int | None = None):
    """`embed_texts` (or `embed_segments` when `segment_tokens` is given: a (vectors, offsets) pair) with a disk
    cache (see the module docstring); loads the encoder only on a miss unless given `encoder=(model, tokenizer)`.

    The texts are embedded in blocks of BLOCK_TEXTS, each saved as it finishes, so a killed run (MIMIC-IV's notes are
    hours of GPU time) picks up after its last finished block; the blocks become one file at the end."""
    digest = hashlib.sha256(json.dumps({"model": model_hash(encoder_folder), "pooling": pooling, "cut": max_tokens,
                                        "chunk": chunk_length, "segment": segment_tokens,
                                        "dtype": str(dtype)}).encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
    path = Path(cache_dir) / f"embeddings-{digest.hexdigest()[:20]}.npz"
    if not path.is_file():
        blocks = path.with_suffix("")  # embeddings-<digest>/block-00000.npz ...
        blocks.mkdir(parents=True, exist_ok=True)
        model = None
        for start in range(0, max(len(texts), 1), BLOCK_TEXTS):
            block = blocks / f"block-{start // BLOCK_TEXTS:05d}.npz"
            if block.is_file():
                continue
            if model is None:
                device = device or torch.device("cpu")
                model, tokenizer = encoder if encoder is not None else load_encoder(encoder_folder, device)
            part = texts[start:start + BLOCK_TEXTS]
            if segment_tokens is None:
                stored = {"vectors": embed_texts(model, tokenizer, part, max_tokens, chunk_length, pooling,
                                                 dtype=dtype, progress=progress)}
            else:
                vectors, offsets = embed_segments(model, tokenizer, part, max_tokens, chunk_length, segment_tokens,
                                                  dtype=dtype, progress=progress)
                stored = {"vectors": vectors, "offsets": offsets}
            _save_npz(block, stored)
        parts = []
        for number in range(-(-max(len(texts), 1) // BLOCK_TEXTS)):
            with np.load(blocks / f"block-{number:05d}.npz") as stored:
                parts.append({k: stored[k] for k in stored.files})
        merged = {"vectors": np.concatenate([p["vectors"] for p in parts])}
        if segment_tokens is not None:  # each block's offsets restart at 0: shift them past the earlier blocks
            shifts = np.cumsum([0] + [p["offsets"][-1] for p in parts[:-1]])
            merged["offsets"] = np.concatenate([parts[0]["offsets"][:1]] + [
                p["offsets"][1:] + shift for p, shift in zip(parts, shifts, strict=True)])
        _save_npz(path, merged)
        shutil.rmtree(blocks)
    with np.load(path) as stored:
        return stored["vectors"] if segment_tokens is None else (stored["vectors"], stored["offsets"])


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
