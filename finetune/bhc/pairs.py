"""A prepared BHC split read for extractive summarisation: each pair's source cut into candidate sentences, with the
ROUGE tokens of every sentence and of the target computed once.

The files are `cmbert bhc prepare`'s (`DATA/{train,validation,test}.jsonl.gz`, one `{"note_id", "subject_id",
"hadm_id", "source", "target"}` a line; `DATA/report.json` is written last, so a folder without it is unfinished).
A pair that cannot be summarised or scored is skipped and counted by reason: ``malformed_record`` (not a JSON object
with string note_id / source / target), ``empty_target``, ``no_source_sentences`` (no candidate sentence:
`cmbert.finetune.bhc.sentences.candidate_sentences`), ``duplicate_note_id``.

`split_fingerprint` hashes (note_id, source, target) of every pair kept, in order: a run folder records it for each
split it summarised, and `cmbert bhc evaluate` refuses summaries of another dataset (or of another version of it).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cmbert.finetune.bhc.metrics import ngram_counts, rouge_tokenizer
from cmbert.finetune.bhc.prepare import split_path
from cmbert.finetune.bhc.sentences import Unit, candidate_sentences, unit_text


@dataclass
class Pair:
    """One note's source sentences (`units`, in order, with their one-line texts) and its reference BHC."""

    note_id: str
    source: str
    target: str
    units: list[Unit]
    texts: list[str]
    source_words: int
    target_words: int
    _tokens: list[list[str]] | None = field(default=None, repr=False)
    _target_tokens: list[str] | None = field(default=None, repr=False)

    @property
    def tokens(self) -> list[list[str]]:
        """ROUGE tokens (stemmed) of each unit, computed on first use."""
        if self._tokens is None:
            tokenize = rouge_tokenizer().tokenize
            self._tokens = [tokenize(t) for t in self.texts]
        return self._tokens

    @property
    def target_tokens(self) -> list[str]:
        if self._target_tokens is None:
            self._target_tokens = rouge_tokenizer().tokenize(self.target)
        return self._target_tokens

    def unit_words(self) -> list[int]:
        return [len(t.split()) for t in self.texts]

    def target_ngrams(self) -> tuple[Counter, Counter]:
        return ngram_counts(self.target_tokens, 1), ngram_counts(self.target_tokens, 2)


def read_split(data: str | Path, split: str, skipped: Counter | None = None, limit: int | None = None
               ) -> list[Pair]:
    """The pairs of one split in file order (the first `limit` kept ones with a limit); skips counted in
    `skipped` by reason (see the module docstring)."""
    skipped = skipped if skipped is not None else Counter()
    pairs: list[Pair] = []
    seen: set[str] = set()
    with gzip.open(split_path(data, split), "rt", encoding="utf-8") as file:
        for line in file:
            if limit is not None and len(pairs) >= limit:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                note_id, source, target = record["note_id"], record["source"], record["target"]
                if not all(isinstance(v, str) for v in (note_id, source, target)):
                    raise TypeError
            except (json.JSONDecodeError, KeyError, TypeError):
                skipped["malformed_record"] += 1
                continue
            if note_id in seen:
                skipped["duplicate_note_id"] += 1
                continue
            if not target.strip():
                skipped["empty_target"] += 1
                continue
            units = candidate_sentences(source)
            if not units:
                skipped["no_source_sentences"] += 1
                continue
            seen.add(note_id)
            pairs.append(Pair(note_id, source, target, units, [unit_text(source, u) for u in units],
                              len(source.split()), len(target.split())))
    return pairs


def split_fingerprint(pairs: list[Pair]) -> str:
    """sha256 (16 hex) over every pair's note_id, source and target, in order."""
    digest = hashlib.sha256()
    for p in pairs:
        for value in (p.note_id, p.source, p.target):
            digest.update(hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest())
    return digest.hexdigest()[:16]
