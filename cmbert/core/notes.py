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
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    pass


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

PREPROCESSING = ("none", "edin")


# Edin's TextPreprocessor with the MIMIC-IV settings (lower, remove_special_characters_mullenbach, remove_digits).
_NOT_ALPHANUMERIC = re.compile(r"[^A-Za-z0-9]+")


# A run of number tokens between spaces: a number at the very start or end of the note survives, as in Edin.
_NUMBER_TOKENS = re.compile(r"(\s\d+)+\s")

_WHITESPACE = re.compile(r"\s+")

_WORD = re.compile(r"\S+")


def edin_preprocess(text: str) -> str:
    """Edin et al.'s text normalisation: lower case, every run of non-alphanumerics -> one space, standalone number
    tokens removed (not digits inside words: "b12" stays), whitespace collapsed, ends stripped."""
    text = _NOT_ALPHANUMERIC.sub(" ", text.lower())
    text = _NUMBER_TOKENS.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip()


def truncate_words(text: str, max_words: int | None) -> str:
    """The text up to the end of its `max_words`-th whitespace-separated word (all of it when None or shorter)."""
    if max_words is None:
        return text
    for count, word in enumerate(_WORD.finditer(text), start=1):
        if count == max_words:
            return text[: word.end()]
    return text


def preprocess_text(text: str, preprocess: str, max_words: int | None) -> str:
    """The text rules a dataset (and a model trained on it) applies: the same at preparation and at prediction."""
    return truncate_words(edin_preprocess(text) if preprocess == "edin" else text, max_words)
