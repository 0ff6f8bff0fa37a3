"""`cmbert predict icd` and `finetune.icd.predict`: codes with titles and scores for new notes.

    from finetune.icd import predict
    for note in predict("runs/icd/runs/demo-8k-seed0/model", "notes.csv", top_k=10):
        print(note["id"], [(c["code"], round(c["score"], 3)) for c in note["codes"]])

Input (`finetune.inputs.read_note_inputs`): a MIMIC-style notes CSV (`note_id`, `text`), a JSONL of {"id", "text"},
one plain-text note, or `-` (stdin). Each note gets the codes whose score exceeds the model's validation-tuned
threshold, or with `top_k` its K best codes, each marked `predicted` when it exceeds the threshold. The model folder
is the one `cmbert finetune icd train` writes (format in finetune/icd/model.py); the note goes through the same
text rules the model was trained with. Output: CSV (one row per note and code) or JSON, by the extension of --out.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from finetune.icd.batches import device_and_dtype, predict_scores, tokenize_notes
from finetune.icd.model import IcdModel


def predict(model_dir: str | Path, notes, top_k: int | None = None, device: str = "auto", precision: str = "auto",
            notes_per_batch: int = 64, tokens_per_batch: int | None = None, counter=None) -> Iterator[dict]:
    """Yield {"id", "codes": [{"code", "title", "score", "predicted"}]} per note, best score first.

    `notes`: a path (any format of `finetune.inputs.read_note_inputs`), or an iterable of `NoteInput` / (id, text)
    pairs / plain strings (ids are then their positions). Works through the notes in blocks, so a large file streams.
    """
    from finetune.icd.data import preprocess_text
    from finetune.inputs import NoteInput, read_note_inputs

    if top_k is not None and top_k < 1:
        raise ValueError("top_k must be >= 1")
    dev, dtype = device_and_dtype(precision, device)
    model, tokenizer = IcdModel.load(model_dir, dev)
    meta = model.meta
    tokens_per_batch = tokens_per_batch or max(meta.max_length, 16384)
    if isinstance(notes, (str, Path)):
        stream: Iterable = read_note_inputs(notes, counter)
    else:
        stream = (n if isinstance(n, NoteInput) else NoteInput(*n) if isinstance(n, tuple) else NoteInput(str(i), n)
                  for i, n in enumerate(notes))
    cut = meta.max_chunks * (meta.max_length - 2)
    block: list = []

    def run(block):
        texts = [preprocess_text(n.text, meta.preprocess, meta.max_words) for n in block]
        tokens = tokenize_notes(tokenizer, texts, cut)
        scores = predict_scores(model, tokens, tokens_per_batch, notes_per_batch, dev, dtype)
        for note, row in zip(block, scores, strict=True):
            order = np.argsort(-row, kind="stable")
            chosen = order[:top_k] if top_k else order[row[order] > meta.threshold]
            yield {"id": note.id, "codes": [
                {"code": meta.codes[j], "title": meta.titles[j], "score": float(row[j]),
                 "predicted": bool(row[j] > meta.threshold)} for j in chosen]}

    for note in stream:
        block.append(note)
        if len(block) == notes_per_batch * 4:
            yield from run(block)
            block = []
    if block:
        yield from run(block)


def write_predictions(predictions: Iterable[dict], out: str | Path | None) -> int:
    """JSON (a list) when `out` ends in .json, JSONL for .jsonl, else CSV (id, rank, code, title, score, predicted);
    stdout (CSV) when `out` is None. Returns the number of notes written."""
    n = 0
    if out is not None and str(out).endswith(".jsonl"):
        with open(out, "w") as f:
            for p in predictions:
                f.write(json.dumps(p) + "\n")
                n += 1
        return n
    if out is not None and str(out).endswith(".json"):
        rows = list(predictions)
        Path(out).write_text(json.dumps(rows, indent=1) + "\n")
        return len(rows)
    f = sys.stdout if out is None else open(out, "w", newline="")
    try:
        writer = csv.writer(f)
        writer.writerow(["id", "rank", "code", "title", "score", "predicted"])
        for p in predictions:
            n += 1
            for rank, c in enumerate(p["codes"], 1):
                writer.writerow([p["id"], rank, c["code"], c["title"], f"{c['score']:.6f}", int(c["predicted"])])
    finally:
        if out is not None:
            f.close()
    return n
