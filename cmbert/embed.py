"""`cmbert embed`: pooled note embeddings of a frozen encoder for a file of notes (the notes' formats are
`cmbert.data.inputs.read_note_inputs`'), written as .npz or JSON lines and cached by model and text.

The command's settings are an `EmbedConfig` (defaults: configs/embed.yaml): `--config FILE`, flags and dotted
`key=value` overrides, as the training commands take them; `embed_file` is the same as a function.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cmbert.core.config import ConfigError, Precision, check_ranges, load_dataclass, require_keys
from cmbert.core.embeddings import (
    DEFAULT_MAX_TOKENS,
    TOKENS_PER_BATCH,
    cache_file,
    cached_embeddings,
    check_pooling,
    context_length,
    model_config,
    model_hash,
    output_format,
    write_embeddings,
)
from cmbert.core.errors import UserError


def embed_file(model: str | Path, input: str | Path, out: str | Path, pooling: str = "mean",
               max_tokens: int = DEFAULT_MAX_TOKENS, chunk_length: int | None = None,
               cache_dir: str | Path | None = None, device: str = "auto", precision: str = "auto",
               tokens_per_batch: int = TOKENS_PER_BATCH, progress: bool = True, counter=None) -> dict:
    """`cmbert embed`: the notes of `input` (any format of `cmbert.data.inputs.read_note_inputs`; skips counted in
    `counter`, a `cmbert.data.readers.SkipCounter`) embedded by the encoder folder `model` and written to `out`
    (`write_embeddings`). Returns the file's `meta` plus `out`, `cache_file` and `cache_hit` (nothing was embedded).

    Chunks hold `chunk_length` tokens, at most the model's context (`context_length`, the default). Vectors go through
    `cached_embeddings` in `cache_dir` (default: `default_cache_dir()/embeddings`), so a rerun on the same model and
    notes reads them back and a killed run resumes."""
    from cmbert.core.io import SkipCounter
    from cmbert.core.runtime import default_cache_dir, device_and_dtype
    from cmbert.data.inputs import read_note_inputs

    output_format(out)  # a bad name fails before the notes are read or the model loaded
    check_pooling(pooling)
    if max_tokens < 1:
        raise UserError(f"max_tokens must be >= 1, got {max_tokens}")
    config = model_config(model)
    context = context_length(model)
    chunk = min(chunk_length or context, context)
    dev, dtype = device_and_dtype(precision, device)
    counter = counter if counter is not None else SkipCounter()
    notes = list(read_note_inputs(input, counter))
    texts = [note.text for note in notes]
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "embeddings"
    cached = cache_file(cache_dir, model, texts, max_tokens, chunk, pooling, dtype)
    hit = cached.is_file()
    vectors = cached_embeddings(cache_dir, model, texts, max_tokens, chunk, pooling, dev, dtype, progress=progress,
                                tokens_per_batch=tokens_per_batch)
    meta = {"model": str(Path(model).resolve()), "model_hash": model_hash(model),
            "model_type": config.get("model_type"), "pooling": pooling, "max_tokens": max_tokens,
            "chunk_length": chunk, "dtype": str(dtype).removeprefix("torch."), "dim": int(vectors.shape[1]),
            "count": len(notes), "skipped": dict(sorted(counter.skipped.items()))}
    write_embeddings(out, [note.id for note in notes], vectors, meta)
    return {**meta, "out": str(out), "cache_file": str(cached), "cache_hit": hit}


@dataclass
class EmbedConfig:
    """The settings of `cmbert embed` (`embed_file`'s arguments; defaults: configs/embed.yaml).

    Args:
        model: a local transformers model folder (never a hub name); required
        input: a notes CSV (note_id, text columns), a JSONL of {id, text}, one .txt note, or -; required
        out: FILE.npz (ids, embeddings, meta) or FILE.jsonl / FILE.jsonl.gz ({id, embedding} per line); required
        pooling: mean (every token of every chunk), cls (each chunk's first token, averaged) or chunk_mean (each
            chunk's mean, averaged)
        max_tokens: tokens read per note (ModernBERT's context: a MIMIC-IV discharge summary whole, a runaway note
            capped)
        chunk_length: tokens per chunk, specials included (default and maximum: the model's context)
        cache: cache folder (default: $CMBERT_CACHE/embeddings or ~/.cache/cmbert/embeddings)
        device: where the encoder runs
        precision: auto (bf16 autocast on GPUs and on CPUs with native bf16, else fp32), fp32 or bf16
        batch_tokens: tokens per forward pass

    Example: cmbert embed --model runs/phase2-8k/model --input notes.csv --out embeddings.npz --pooling chunk_mean
    """

    model: str | None = None
    input: str | None = None
    out: str | None = None
    pooling: Literal["mean", "cls", "chunk_mean"] = "mean"
    max_tokens: int = DEFAULT_MAX_TOKENS
    chunk_length: int | None = None
    cache: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Precision = "auto"
    batch_tokens: int = TOKENS_PER_BATCH


def load_embed_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> EmbedConfig:
    """configs/embed.yaml (or `path`) with dotted overrides, checked key by key."""
    cfg = load_dataclass(EmbedConfig, "configs/embed.yaml" if path is None else path, overrides)
    require_keys(cfg, ("model", "input", "out"))
    check_ranges(cfg, "", {"max_tokens": ">= 1", "batch_tokens": ">= 1"})
    if cfg.chunk_length is not None and cfg.chunk_length < 3:
        raise ConfigError(f"chunk_length: must be at least 3 ([CLS] token [SEP]), got {cfg.chunk_length}")
    return cfg


def embed_from_config(cfg: EmbedConfig) -> dict:
    """`embed_file` with the settings of an `EmbedConfig`."""
    return embed_file(cfg.model, cfg.input, cfg.out, pooling=cfg.pooling, max_tokens=cfg.max_tokens,
                      chunk_length=cfg.chunk_length, cache_dir=cfg.cache, device=cfg.device, precision=cfg.precision,
                      tokens_per_batch=cfg.batch_tokens)


def format_summary(s: dict) -> str:
    """What `cmbert embed` prints (to stderr): counts, skips, the output and whether the cache had it all."""
    skipped = ", ".join(f"{k} {v:,}" for k, v in s["skipped"].items())
    cache = "cache hit, nothing embedded" if s["cache_hit"] else "embedded and cached"
    return (f"{s['count']:,} notes" + (f" ({skipped} skipped)" if skipped else "")
            + f" -> {s['out']}: {s['dim']}-d {s['pooling']} embeddings ({cache}: {s['cache_file']})")
