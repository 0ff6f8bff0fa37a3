"""Notes -> token chunks -> packed batches, shared by training, evaluation and `cmbert predict icd`.

A note is tokenized once without special tokens, cut at `max_chunks * (max_length - 2)` tokens, and split into chunks
of at most `max_length - 2` tokens, each wrapped in [CLS] ... [SEP] (the encoder reads every chunk as its own
document). Batches are packed without padding: 1-D `input_ids`, `cu_seqlens` over chunks, and `note_chunks`, the
cumulative number of chunks per note. Notes are grouped under a token budget, so a batch of long notes holds few of
them and a batch of short ones many.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from finetune.icd.model import IcdModel


PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16_cpu() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX). There, bf16 autocast runs the encoder
    ~1.6x faster than fp32 (bench/icd_step.py); elsewhere bf16 is emulated and slower than fp32."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


def device_and_dtype(precision: str = "auto", device: str = "auto") -> tuple[torch.device, torch.dtype]:
    """The device, and the autocast dtype for training and inference: `auto` is bf16 on CUDA and on CPUs with native
    bf16, fp32 elsewhere. Weights and the label-attention softmax stay fp32 in every case."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    else:
        dev = torch.device(device)
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" or (dev.type == "cpu" and native_bf16_cpu()) else "fp32"
    return dev, torch.bfloat16 if precision == "bf16" else torch.float32


@dataclass
class TokenizedNotes:
    """Token ids of many notes in one flat array: note i is ids[offsets[i]:offsets[i+1]] (no special tokens)."""

    ids: np.ndarray  # int32
    offsets: np.ndarray  # int64 [n + 1]
    full_lengths: np.ndarray  # int64 [n]: tokens before the cut, to count truncated notes and bucket by length

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def note(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i]:self.offsets[i + 1]]

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, ids=self.ids, offsets=self.offsets, full_lengths=self.full_lengths)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> TokenizedNotes:
        with np.load(path) as f:
            return cls(f["ids"], f["offsets"], f["full_lengths"])


def tokenize_notes(tokenizer, texts: Iterable[str], max_tokens: int, batch_size: int = 128) -> TokenizedNotes:
    """Tokenize in batches (the fast tokenizer parallelises inside one call); keep at most `max_tokens` per note."""
    pieces, lengths, full = [], [], []
    batch: list[str] = []

    def flush():
        # verbose=False: notes are longer than the tokenizer's model_max_length by design (they are chunked next)
        for ids in tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]:
            full.append(len(ids))
            kept = np.asarray(ids[:max_tokens], dtype=np.int32)
            pieces.append(kept)
            lengths.append(len(kept))
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    return TokenizedNotes(ids, offsets, np.asarray(full, dtype=np.int64))


def cached_tokenization(cache_dir: Path, key: dict, texts: Iterable[str], tokenizer, max_tokens: int) -> TokenizedNotes:
    """`tokenize_notes`, cached under a hash of `key` (dataset, split, tokenizer hash, cut) so reruns, resumed runs
    and other seeds skip it."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / f"{key.get('split', 'notes')}-{digest}.npz"
    if path.is_file():
        return TokenizedNotes.load(path)
    notes = tokenize_notes(tokenizer, texts, max_tokens)
    cache_dir.mkdir(parents=True, exist_ok=True)
    notes.save(path)
    return notes


def note_chunks(ids: np.ndarray, max_length: int, cls_id: int, sep_id: int) -> list[np.ndarray]:
    """[CLS] piece [SEP] for every `max_length - 2` tokens of a note (an empty note is one [CLS] [SEP] chunk)."""
    step = max_length - 2
    starts = range(0, max(len(ids), 1), step)
    return [np.concatenate(([cls_id], ids[s:s + step], [sep_id])).astype(np.int64) for s in starts]


def collate(notes: Sequence[np.ndarray], max_length: int, cls_id: int, sep_id: int,
            labels: np.ndarray | None = None) -> dict:
    """Packed batch of the given notes' chunks (see the module docstring)."""
    chunks, per_note = [], []
    for ids in notes:
        pieces = note_chunks(ids, max_length, cls_id, sep_id)
        chunks += pieces
        per_note.append(len(pieces))
    lengths = torch.tensor([len(c) for c in chunks], dtype=torch.int32)
    batch = {
        "input_ids": torch.from_numpy(np.concatenate(chunks)),
        "cu_seqlens": torch.nn.functional.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0)),
        "max_seqlen": int(lengths.max()),
        "note_chunks": torch.nn.functional.pad(torch.cumsum(torch.tensor(per_note), 0), (1, 0)),
    }
    if labels is not None:
        batch["labels"] = torch.from_numpy(np.asarray(labels, dtype=np.float32))
    return batch


def token_budget_batches(lengths: np.ndarray, tokens_per_batch: int, max_notes: int,
                         rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Note indices grouped so each group's tokens (+2 per note) stay under `tokens_per_batch` (a longer note is a
    batch of its own). With `rng`: shuffled, then sorted by length within windows of 50 batches' worth of notes so
    a batch holds notes of similar length (the label attention pads to the longest note of its batch); the batches'
    order is shuffled too. Without: in order (evaluation keeps the split's order)."""
    order = np.arange(len(lengths))
    if rng is not None and len(order):
        order = rng.permutation(order)
        notes_per_batch = max(1, tokens_per_batch // max(int(np.mean(lengths)), 1))
        windows = np.array_split(order, max(1, len(order) // max(1, 50 * notes_per_batch)))
        order = np.concatenate([w[np.argsort(lengths[w], kind="stable")] for w in windows])
    batches, current, used = [], [], 0
    for i in order:
        cost = int(lengths[i]) + 2
        if current and (used + cost > tokens_per_batch or len(current) == max_notes):
            batches.append(np.asarray(current))
            current, used = [], 0
        current.append(i)
        used += cost
    if current:
        batches.append(np.asarray(current))
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


class StateCache:
    """The frozen encoder's final states of every token of a split's notes (16-bit, in memory), so epochs that train
    only the head (`train.head_warmup_epochs`) run the encoder once instead of once per epoch."""

    def __init__(self, model, notes: TokenizedNotes, tokens_per_batch: int, max_notes: int, device: torch.device,
                 dtype: torch.dtype):
        meta, config = model.meta, model.config
        pieces, lengths = [], np.zeros(len(notes), dtype=np.int64)
        order = []
        # The head reads them in the autocast dtype; CPU autocast rejects fp16 tensors, so bf16 runs keep bf16.
        store = torch.bfloat16 if dtype == torch.bfloat16 else torch.float16
        modes = {m: m.training for m in model.modules()}
        model.eval()
        with torch.no_grad():
            for idx in token_budget_batches(np.diff(notes.offsets), tokens_per_batch, max_notes):
                batch = collate([notes.note(i) for i in idx], meta.max_length, config.cls_token_id,
                                config.sep_token_id)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                    h, note_cu = model.note_states(batch["input_ids"].to(device), batch["cu_seqlens"].to(device),
                                                   batch["max_seqlen"], batch["note_chunks"].to(device))
                pieces.append(h.to(store))
                lengths[idx] = (note_cu[1:] - note_cu[:-1]).cpu().numpy()
                order += list(idx)
        for m, training in modes.items():
            m.train(training)
        # Notes were encoded in batch order; index them by note number.
        self.states = torch.cat(pieces)
        starts_in_order = np.concatenate(([0], np.cumsum(lengths[order])[:-1]))
        self.starts = np.zeros(len(notes), dtype=np.int64)
        self.starts[order] = starts_in_order
        self.lengths = lengths

    @staticmethod
    def nbytes(notes: TokenizedNotes, max_length: int, hidden_size: int) -> int:
        """Memory the cache of these notes would take (each chunk adds [CLS] and [SEP])."""
        tokens = np.diff(notes.offsets)
        chunks = np.maximum(1, -(-tokens // (max_length - 2)))
        return int((tokens + 2 * chunks).sum()) * hidden_size * 2

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(states [total, H] 16-bit, note ranges int32 [len(idx) + 1]) of the given notes, as `note_states` gives."""
        h = torch.cat([self.states[self.starts[i]:self.starts[i] + self.lengths[i]] for i in idx])
        note_cu = torch.nn.functional.pad(torch.from_numpy(np.cumsum(self.lengths[idx])), (1, 0)).to(torch.int32)
        return h, note_cu.to(h.device)


@torch.no_grad()
def predict_scores(model: IcdModel, notes: TokenizedNotes, tokens_per_batch: int, max_notes: int,
                   device: torch.device, dtype: torch.dtype, cache: StateCache | None = None) -> np.ndarray:
    """Sigmoid scores [n_notes, n_codes] (float32), in the notes' order; from cached encoder states if given."""
    model.eval()
    lengths = np.diff(notes.offsets)
    cls_id, sep_id = model.config.cls_token_id, model.config.sep_token_id
    out = np.zeros((len(notes), len(model.meta.codes)), dtype=np.float32)
    for idx in token_budget_batches(lengths, tokens_per_batch, max_notes):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            if cache is not None:
                h, note_cu = cache.batch(idx)
                logits = model.classify(h.to(dtype), note_cu)
            else:
                batch = collate([notes.note(i) for i in idx], model.meta.max_length, cls_id, sep_id)
                logits = model(batch["input_ids"].to(device), batch["cu_seqlens"].to(device), batch["max_seqlen"],
                               batch["note_chunks"].to(device))
        out[idx] = torch.sigmoid(logits.float()).cpu().numpy()
    return out
