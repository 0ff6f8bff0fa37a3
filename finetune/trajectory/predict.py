"""`cmbert predict trajectory`: the next visit's most likely categories, with names, for one patient's history.

The history comes from a MIMIC-IV tree (`--mimic DIR --subject-id ID`: every visit of the patient, read and mapped as
`cmbert finetune trajectory prepare` does) or from a JSON file (`--history FILE`):

    {"visits": [{"diagnoses": ["10:I5023", "9:4280"], "procedures": ["P10:5A1D70Z"], "age": 71.5,
                 "days_since_previous": null, "note": "discharge summary text ..."}, ...]}

visits oldest first; `diagnoses` as "VERSION:CODE" (MIMIC's dotless codes); everything but `diagnoses` optional; a
note may also be given as `"note_file": "path.txt"` (relative to the JSON file). The model reads the latest
`max_visits` visits and scores the visit after the last one. Notes are read by the encoder the model was trained with:
its own `encoder/` folder when the encoder was fine-tuned with it, else the frozen encoder's folder named in
trajectory.json (`--encoder DIR` points elsewhere if it moved).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from cmbert.core.errors import MissingInput, UserError
from cmbert.finetune.trajectory.data import Visit
from cmbert.finetune.trajectory.model import TrajectoryModel


def _visit_from_json(record: dict, index: int, base: Path, mapper) -> tuple[Visit, str | None]:
    if not isinstance(record, dict) or not isinstance(record.get("diagnoses"), list):
        raise UserError(f"history visit {index}: expected an object with a list of diagnoses")
    targets = set()
    diagnoses = []
    for token in record["diagnoses"]:
        version, _, code = str(token).partition(":")
        if version not in ("9", "10") or not code:
            raise UserError(f"history visit {index}: diagnosis {token!r} is not VERSION:CODE (e.g. 10:I5023)")
        code = code.strip().replace(".", "").upper()
        diagnoses.append(f"{version}:{code}")
        targets.update(mapper.map(code, int(version)))
    note = record.get("note")
    if note is None and record.get("note_file"):
        note = (base / record["note_file"]).read_text(encoding="utf-8")
    if note is not None and not isinstance(note, str):
        raise UserError(f"history visit {index}: note must be text")
    visit = Visit(hadm_id=index, admittime=str(record.get("admittime", "")), age=record.get("age"),
                  days_since_previous=record.get("days_since_previous"), diagnoses=diagnoses,
                  targets=sorted(targets), procedures=[str(p) for p in record.get("procedures", [])],
                  note_id=f"visit-{index}" if note and note.strip() else None)
    return visit, note if visit.note_id else None


def history_from_json(path: str | Path, vocabulary: str) -> tuple[list[Visit], dict[str, str]]:
    from cmbert.data.categories import CodeMapper

    path = Path(path)
    record = json.loads(path.read_text(encoding="utf-8"))
    visits = record.get("visits") if isinstance(record, dict) else None
    if not visits:
        raise UserError(f"{path}: expected {{\"visits\": [...]}} with one or more visits")
    mapper = CodeMapper(vocabulary)
    out, notes = [], {}
    for i, item in enumerate(visits):
        visit, note = _visit_from_json(item, i, path.parent, mapper)
        out.append(visit)
        if note is not None:
            notes[visit.note_id] = note
    return out, notes


def history_from_mimic(mimic: str | Path, subject_id: int, vocabulary: str) -> tuple[list[Visit], dict[str, str]]:
    from cmbert.core.io import SkipCounter
    from cmbert.finetune.trajectory.data import TABLES, _table, attach_notes, read_visits

    mimic = Path(mimic)
    patients, _ = read_visits(mimic, vocabulary, min_visits=1, subjects={subject_id})
    if not patients:
        raise UserError(f"{mimic}: subject {subject_id} has no admission with a mapped diagnosis")
    visits = patients[0].visits
    notes = {}
    if (path := _table(mimic, TABLES["notes"], required=False)) is not None:
        for note in attach_notes(path, {v.hadm_id: v for v in visits}, SkipCounter()):
            notes[note.note_id] = note.text
    return visits, notes


@torch.no_grad()
def predict_next(model_dir: str | Path, visits: list[Visit], notes: dict[str, str], top_k: int = 20,
                 encoder: str | Path | None = None, device: str = "auto") -> list[dict]:
    """[{rank, category, name, score}] for the visit after the last of `visits` (oldest first)."""
    from cmbert.core.embeddings import embed_segments, load_encoder
    from cmbert.core.runtime import device_and_dtype
    from cmbert.finetune.trajectory.model import RARE, age_bucket, gap_bucket
    from cmbert.finetune.trajectory.train import NotePieces, Window, collate, model_inputs, visit_tokens

    dev, dtype = device_and_dtype("auto", device)
    model = TrajectoryModel.load(model_dir, dev)
    meta = model.meta
    visits = visits[-meta.max_visits:]
    note_rows: dict[str, int] = {}
    pieces = NotePieces.empty(meta.note_dim)
    wanted = [v.note_id for v in visits if v.note_id in notes]
    if meta.uses_notes and wanted:
        folder = model.note_encoder_folder(model_dir, encoder)
        if not folder or not Path(folder, "config.json").is_file():
            raise MissingInput(f"the note encoder {folder} is missing; pass --encoder DIR (the model was "
                               f"trained with {meta.encoder})")
        enc, tokenizer = load_encoder(folder, dev)
        vectors, offsets = embed_segments(enc, tokenizer, [notes[i] for i in wanted], meta.note_max_tokens,
                                          meta.chunk_length, meta.segment_tokens, dtype=dtype)
        pieces = NotePieces(torch.from_numpy(vectors), offsets)
        note_rows = {note_id: row for row, note_id in enumerate(wanted)}
    token_ids = {tok: i for i, tok in enumerate(meta.tokens)}
    category_ids = {c: i for i, c in enumerate(meta.categories)}
    window = Window(tokens=[[token_ids.get(t, RARE) for t in visit_tokens(v)] for v in visits],
                    note_rows=[note_rows.get(v.note_id, -1) for v in visits],
                    gap=[gap_bucket(v.days_since_previous) for v in visits], age=[age_bucket(v.age) for v in visits],
                    targets=[[category_ids[c] for c in v.targets if c in category_ids] for v in visits],
                    sample_ids=[-1] * len(visits))
    batch = collate([window], pieces, len(meta.categories))
    probs = torch.sigmoid(model(**model_inputs(batch, dev))[0, len(visits) - 1].float()).cpu().numpy()
    order = np.argsort(-probs, kind="stable")[:top_k]
    return [{"rank": r + 1, "category": meta.categories[i], "name": meta.category_names[i],
             "score": round(float(probs[i]), 4)} for r, i in enumerate(order)]
