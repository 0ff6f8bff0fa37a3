"""Pooled note embeddings from a frozen encoder (ours, any ModernBERT, or another local transformers encoder), cached
on disk by model and text; `cmbert embed` (`embed_file`) writes them for a file of notes.

A note is tokenized without special tokens, cut at `max_tokens`, and read in chunks of `chunk_length` tokens ([CLS]
piece [SEP], each chunk its own document: `cmbert.core.notes.collate`), so notes longer than the encoder's context
are read whole. Pooling (`POOLINGS`):
- ``mean``: the mean of the final hidden states of every token of every chunk (specials included), the usual
  sentence-embedding pooling for an MLM encoder without a trained [CLS]; a long note's chunks weigh by their length;
- ``cls``: the mean over chunks of each chunk's [CLS] state (its first token, whatever the tokenizer calls it);
- ``chunk_mean``: each chunk's token mean, then the mean over the note's chunks, one weight per chunk: how
  document embeddings are usually built from a sentence-embedding model's passages (a short last chunk counts as much
  as a full one, and equals ``mean`` for a note of one chunk);
- segments (`embed_segments`): the mean states of consecutive `segment_tokens`-token pieces, one vector each, so a
  reader downstream can attend to the sentence that matters instead of an average over 5,000 tokens.

Model families are told apart in one place, `load_encoder`, by config.json's `model_type`: a ModernBERT folder runs
on our encoder (`cmbert.modeling.ModernBertModel`: packed chunks, no padding); any other encoder transformers' `AutoModel`
loads from a local folder (BERT, RoBERTa, and the BERT-based E5 / BGE / GTE of the MTEB comparisons, e.g. Xu & Dray
2025's federated ICD coding) runs inside `PaddedEncoder`, which takes the same packed chunks, pads them to the
batch's longest with an attention mask and gives back the packed states. So chunking and pooling are one code for
both; such a model's chunks are wrapped in the two specials its tokenizer puts around a text and hold at most its
context (`context_length`).

The cache file is named by a hash of (the encoder's weights, config and tokenizer files, pooling, cut, chunk length,
autocast dtype, the texts): a changed model or note gives a new file, never a stale vector. It is written in blocks,
so a killed run resumes (`cached_embeddings`). Used by the trajectory model (notes of past visits, titles of codes)
and by `cmbert embed`, whose output is .npz or JSON Lines (`write_embeddings`, `read_embeddings`).
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cmbert.core.errors import MissingInput, UserError

POOLINGS = ("mean", "cls", "chunk_mean")
BLOCK_TEXTS = 2048  # texts per saved block of `cached_embeddings` (what a killed run can lose)
TOKENS_PER_BATCH = 16384  # tokens per forward pass (a chunk longer than this is a batch of its own)
# `embed_file`'s cut: ModernBERT's context, which holds nearly every MIMIC-IV discharge summary whole (the trajectory
# preset mimic4.yaml reads notes to the same length) while a runaway 100k-token note costs at most 8k tokens of work.
DEFAULT_MAX_TOKENS = 8192
OUTPUT_SUFFIXES = (".npz", ".jsonl", ".jsonl.gz")
# What decides an embedding: weights, config, and the tokenizer files of every common family (tokenizer.json; BERT's
# vocab.txt; GPT-2/RoBERTa BPE's vocab.json + merges.txt; sentencepiece *.model). Files are hashed in this order, then
# the pattern matches by name, so a folder holding only the first five keeps the hash it had before the others counted.
_MODEL_FILES = ("model.safetensors", "pytorch_model.bin", "config.json", "tokenizer.json", "tokenizer_config.json",
                "model.safetensors.index.json", "vocab.txt", "vocab.json", "merges.txt", "special_tokens_map.json",
                "added_tokens.json")
_MODEL_FILE_PATTERNS = ("*.model", "model-*-of-*.safetensors")  # sentencepiece models; sharded weights


def model_hash(folder: str | Path) -> str:
    """sha256 (16 hex) over the folder's weight, config and tokenizer files: what decides an embedding."""
    folder = Path(folder)
    names = [*_MODEL_FILES, *sorted({path.name for pattern in _MODEL_FILE_PATTERNS for path in folder.glob(pattern)}
                                    - set(_MODEL_FILES))]
    digest = hashlib.sha256()
    for name in names:
        path = folder / name
        if path.is_file():
            digest.update(name.encode())
            with open(path, "rb") as file:
                for block in iter(lambda: file.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def model_config(folder: str | Path) -> dict:
    """config.json of a local model folder (the hub is never asked)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise MissingInput(f"{folder}: no config.json (a local transformers model folder is needed; the hub is "
                           "not used)")
    return json.loads(path.read_text(encoding="utf-8"))


def context_length(folder: str | Path) -> int:
    """Tokens one chunk may hold, specials included: config.json's `max_position_embeddings`, or the tokenizer's
    `model_max_length` when smaller (a RoBERTa-family config counts two padding positions: 514 for 512 tokens; a
    tokenizer without a limit records 1e30, which the min ignores)."""
    limit = model_config(folder).get("max_position_embeddings")
    if not isinstance(limit, int):
        raise UserError(f"{folder}: config.json has no max_position_embeddings, so the context to chunk notes at is "
                        "unknown")
    tokenizer_config = Path(folder) / "tokenizer_config.json"
    if tokenizer_config.is_file():
        tokenizer_limit = json.loads(tokenizer_config.read_text(encoding="utf-8")).get("model_max_length")
        if isinstance(tokenizer_limit, int | float):
            limit = min(limit, int(tokenizer_limit))
    return limit


def quiet_from_pretrained(cls, folder: str | Path, **kwargs):
    """`cls.from_pretrained(folder)` without transformers' load report or progress bar. Our loader is strict and
    raises on any key that is wrong; the report would only list the MLM head's keys an encoder does not use, which
    reads like an error."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return cls.from_pretrained(folder, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def load_encoder(folder: str | Path, device: torch.device, trainable: bool = False):
    """(encoder, tokenizer) of a local transformers folder: our ModernBertModel for a ModernBERT folder, any other
    encoder `AutoModel` loads inside a `PaddedEncoder` (see the module docstring); frozen in eval mode, or with
    `trainable` in train mode with gradients (fine-tuned with a downstream model)."""
    from transformers import AutoModel, AutoTokenizer

    from cmbert.modeling import ModernBertModel

    config = model_config(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if config.get("model_type") == "modernbert":
        encoder = quiet_from_pretrained(ModernBertModel, folder)
    else:
        model = quiet_from_pretrained(AutoModel, folder, local_files_only=True)
        encoder = PaddedEncoder(model, tokenizer, context_length(folder))
    encoder = encoder.to(device).train(trainable)
    for parameter in encoder.parameters():
        parameter.requires_grad_(trainable)
    return encoder, tokenizer


def wrapping_specials(tokenizer) -> tuple[int, int]:
    """The ids a tokenizer puts before and after a text ([CLS] / [SEP], <s> / </s>, ...), found by encoding a probe
    with and without special tokens, so no token name is assumed."""
    probe = "note"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    if len(full) != len(bare) + 2 or full[1:-1] != bare:
        raise UserError(f"{tokenizer.name_or_path}: its tokenizer encodes a text as {bare} -> {full} with special "
                        "tokens; note embeddings need an encoder whose tokenizer adds one token before and one after")
    return full[0], full[-1]


class PaddedEncoder(torch.nn.Module):
    """A transformers encoder that reads padded batches (BERT, RoBERTa, E5, BGE, ...) behind our encoder's packed
    interface: chunks laid end to end with `cu_seqlens` in, their final states [total, hidden] out, so every model is
    chunked, batched and pooled by the same code. `config` is the model's with `cls_token_id` / `sep_token_id` set to
    the ids its tokenizer wraps a text in, which `collate` puts around each chunk."""

    def __init__(self, model: torch.nn.Module, tokenizer, context: int):
        super().__init__()
        self.model = model
        self.context = context
        # Padding is masked out, so any id does where a tokenizer has no pad token.
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.config = copy.copy(model.config)  # the model's own config stays as transformers loaded it
        self.config.cls_token_id, self.config.sep_token_id = wrapping_specials(tokenizer)

    def forward(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int):
        from transformers.modeling_outputs import BaseModelOutput

        if max_seqlen > self.context:
            raise ValueError(f"a chunk of {max_seqlen} tokens is longer than the {self.config.model_type} model's "
                             f"context of {self.context}")
        device = input_ids.device
        cu = cu_seqlens.to(device=device, dtype=torch.long)
        chunk = torch.repeat_interleave(torch.arange(len(cu) - 1, device=device), cu[1:] - cu[:-1])
        position = torch.arange(len(input_ids), device=device) - cu[chunk]
        ids = input_ids.new_full((len(cu) - 1, max_seqlen), self.pad_token_id)
        ids[chunk, position] = input_ids
        mask = torch.zeros_like(ids)
        mask[chunk, position] = 1
        states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return BaseModelOutput(last_hidden_state=states[chunk, position])


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


def pool_note(states: torch.Tensor, chunk_starts: torch.Tensor, pooling: str) -> torch.Tensor:
    """One note's vector [hidden] from the final states of its chunks' tokens [n_tokens, hidden] (chunks end to end,
    starting at `chunk_starts`), by `pooling` (see the module docstring)."""
    if pooling == "mean":
        return states.mean(0)
    if pooling == "cls":
        return states[chunk_starts].mean(0)
    lengths = torch.diff(chunk_starts, append=chunk_starts.new_tensor([len(states)]))
    chunk_means, _ = piece_means(states, lengths, int(lengths.max()))  # one piece per chunk: its token mean
    return chunk_means.mean(0)


@torch.no_grad()
def _note_states(encoder, notes, chunk_length: int, tokens_per_batch: int, dtype: torch.dtype, progress: bool):
    """(note index, final states of all its chunks' tokens [n_tokens, hidden] fp32, chunk starts) for every note of
    `notes` (`cmbert.core.notes.TokenizedNotes`)."""
    from tqdm import tqdm

    from cmbert.core.notes import collate, token_budget_batches

    if chunk_length < 3:
        raise UserError(f"chunk_length must be at least 3 ([CLS] token [SEP]), got {chunk_length}")
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


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise UserError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")


def embed_texts(encoder, tokenizer, texts: Sequence[str], max_tokens: int, chunk_length: int, pooling: str = "mean",
                tokens_per_batch: int = TOKENS_PER_BATCH, dtype: torch.dtype = torch.float32, progress: bool = False
                ) -> np.ndarray:
    """[len(texts), hidden] float32 pooled embeddings (see the module docstring), in the texts' order."""
    check_pooling(pooling)
    from cmbert.core.notes import tokenize_notes

    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    notes = tokenize_notes(tokenizer, texts, max_tokens)
    for i, h, starts in _note_states(encoder, notes, chunk_length, tokens_per_batch, dtype, progress):
        out[i] = pool_note(h, starts, pooling).cpu().numpy()
    return out


def embed_segments(encoder, tokenizer, texts: Sequence[str], max_tokens: int, chunk_length: int,
                   segment_tokens: int, tokens_per_batch: int = TOKENS_PER_BATCH, dtype: torch.dtype = torch.float32,
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each note as the mean states of consecutive `segment_tokens`-token pieces (read in context: the encoder sees
    whole chunks), so one sentence is not averaged away over a long note: (vectors [total_segments, hidden] fp16,
    offsets int64 [len(texts) + 1]; note i is vectors[offsets[i]:offsets[i + 1]])."""
    from cmbert.core.notes import tokenize_notes

    return segments_of_tokens(encoder, tokenize_notes(tokenizer, texts, max_tokens), chunk_length, segment_tokens,
                              tokens_per_batch=tokens_per_batch, dtype=dtype, progress=progress)


def segments_of_tokens(encoder, notes, chunk_length: int, segment_tokens: int, rows=None,
                       tokens_per_batch: int = TOKENS_PER_BATCH, dtype: torch.dtype = torch.float32,
                       progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`embed_segments` of already tokenized notes (`TokenizedNotes`); with `rows`, only those notes are read and the
    others get no pieces (offsets still cover every note)."""
    from cmbert.core.notes import TokenizedNotes

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


def cache_file(cache_dir: str | Path, encoder_folder: str | Path, texts: Sequence[str], max_tokens: int,
               chunk_length: int, pooling: str = "mean", dtype: torch.dtype = torch.float32,
               segment_tokens: int | None = None) -> Path:
    """Where `cached_embeddings` keeps these texts' vectors (see the module docstring for what the name hashes)."""
    digest = hashlib.sha256(json.dumps({"model": model_hash(encoder_folder), "pooling": pooling, "cut": max_tokens,
                                        "chunk": chunk_length, "segment": segment_tokens,
                                        "dtype": str(dtype)}).encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
    return Path(cache_dir) / f"embeddings-{digest.hexdigest()[:20]}.npz"


def cached_embeddings(cache_dir: str | Path, encoder_folder: str | Path, texts: Sequence[str], max_tokens: int,
                      chunk_length: int, pooling: str = "mean", device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32, progress: bool = False, encoder=None,
                      segment_tokens: int | None = None, tokens_per_batch: int = TOKENS_PER_BATCH):
    """`embed_texts` (or `embed_segments` when `segment_tokens` is given: a (vectors, offsets) pair) with a disk
    cache (see the module docstring); loads the encoder only on a miss unless given `encoder=(model, tokenizer)`.

    The texts are embedded in blocks of BLOCK_TEXTS, each saved as it finishes, so a killed run (MIMIC-IV's notes are
    hours of GPU time) picks up after its last finished block; the blocks become one file at the end."""
    path = cache_file(cache_dir, encoder_folder, texts, max_tokens, chunk_length, pooling, dtype, segment_tokens)
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
                                                 tokens_per_batch=tokens_per_batch, dtype=dtype, progress=progress)}
            else:
                vectors, offsets = embed_segments(model, tokenizer, part, max_tokens, chunk_length, segment_tokens,
                                                  tokens_per_batch=tokens_per_batch, dtype=dtype, progress=progress)
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


def output_format(path: str | Path) -> str:
    """The suffix of OUTPUT_SUFFIXES that `path` ends in (case aside), or a ValueError naming them."""
    name = Path(path).name.lower()
    for suffix in OUTPUT_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise UserError(f"{path}: embeddings are written as {', '.join(OUTPUT_SUFFIXES)}; choose an output name ending "
                    "in one")


def write_embeddings(path: str | Path, ids: Sequence[str], vectors: np.ndarray, meta: dict) -> None:
    """`path` by its suffix: .npz holds `ids` (str [n]), `embeddings` (float32 [n, dim]) and `meta` (a JSON string);
    .jsonl / .jsonl.gz one {"id", "embedding"} per line (no meta: a line is a note). Written to a temporary file
    renamed into place, so a killed run never leaves a half file under the name."""
    kind = output_format(path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    vectors = np.asarray(vectors, dtype=np.float32)
    try:
        if kind == ".npz":
            with open(tmp, "wb") as file:  # a file object: np.savez would append .npz to a name
                np.savez(file, ids=np.asarray(ids, dtype=str), embeddings=vectors, meta=np.asarray(json.dumps(meta)))
        else:
            with (gzip.open if kind == ".jsonl.gz" else open)(tmp, "wt", encoding="utf-8") as file:
                for note_id, vector in zip(ids, vectors, strict=True):
                    file.write(json.dumps({"id": note_id, "embedding": vector.tolist()}) + "\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_embeddings(path: str | Path) -> tuple[list[str], np.ndarray, dict]:
    """(ids, float32 [n, dim], meta) of a file `write_embeddings` wrote; a JSON Lines file has no meta ({})."""
    kind = output_format(path)
    if kind == ".npz":
        with np.load(path, allow_pickle=False) as stored:
            return stored["ids"].tolist(), stored["embeddings"], json.loads(str(stored["meta"]))
    ids, rows = [], []
    with (gzip.open if kind == ".jsonl.gz" else open)(path, "rt", encoding="utf-8") as file:
        for line in filter(str.strip, file):
            record = json.loads(line)
            ids.append(record["id"])
            rows.append(record["embedding"])
    return ids, np.asarray(rows, dtype=np.float32).reshape(len(rows), -1 if rows else 0), {}
