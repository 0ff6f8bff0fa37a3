"""`cmbert predict icd` and `cmbert.finetune.icd.predict`: codes with titles and scores for new notes.

    from cmbert.finetune.icd import predict
    for note in predict("runs/icd/runs/demo-8k-seed0/model", "notes.csv", top_k=10):
        print(note["id"], [(c["code"], round(c["score"], 3)) for c in note["codes"]])

Input (`cmbert.data.inputs.read_note_inputs`): a MIMIC-style notes CSV (`note_id`, `text`), a JSONL of {"id", "text"},
one plain-text note, or `-` (stdin). Each note gets the codes whose score exceeds the model's validation-tuned
threshold, or with `top_k` its K best codes, each marked `predicted` when it exceeds the threshold. The model folder
is the one `cmbert finetune icd train` writes (format in cmbert/core/label_attention.py); the note goes through the same
text rules the model was trained with. Output: CSV (one row per note and code) or JSON, by the extension of --out.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from cmbert.core import label_attention
from cmbert.data.inputs import read_note_inputs


def predict(model_dir: str | Path, notes, top_k: int | None = None, device: str = "auto", precision: str = "auto",
            notes_per_batch: int = 64, tokens_per_batch: int | None = None, counter=None) -> Iterator[dict]:
    """Yield {"id", "codes": [{"code", "title", "score", "predicted"}]} per note, best score first.

    `notes`: a path (any format of `cmbert.data.inputs.read_note_inputs`; skipped records counted in `counter`), or
    what `cmbert.core.label_attention.predict` takes: (id, text) pairs or plain strings. Streams in blocks.
    """
    stream = read_note_inputs(notes, counter) if isinstance(notes, (str, Path)) else notes
    return label_attention.predict(model_dir, stream, top_k=top_k, device=device, precision=precision,
                                   notes_per_batch=notes_per_batch, tokens_per_batch=tokens_per_batch)


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
