"""A prepared ICD coding dataset (`cmbert finetune icd prepare` writes it; the ICD, federated and robustness recipes
read it): `{train,val,test}.jsonl.gz` of {note_id, subject_id, hadm_id, text, codes}, `labels.json` (the code set with
titles and train counts) and `split.csv`. Format details: docs/icd.md."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from cmbert.core.errors import MissingInput, UserError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class IcdExample:
    note_id: str
    subject_id: int
    hadm_id: int
    text: str
    codes: tuple[str, ...]  # dotted, in labels.json order


@dataclass(frozen=True)
class LabelSet:
    """The labels of one dataset, in column order (by note count, descending, then code)."""

    version: int
    codes: list[str]
    titles: dict[str, str]
    kinds: dict[str, str]  # "diagnosis" | "procedure"
    counts: dict[str, int]  # notes over all splits
    train_counts: dict[str, int]  # train notes
    preprocess: str = "none"  # the text rules of the dataset, which a model trained on it applies at prediction
    max_words: int | None = None

    @cached_property
    def _columns(self) -> dict[str, int]:
        return {code: column for column, code in enumerate(self.codes)}

    def index(self) -> dict[str, int]:
        """code -> column."""
        return dict(self._columns)

    def encode(self, codes: Iterable[str]) -> np.ndarray:
        """Multi-hot bool vector [len(self.codes)]. A code outside the label set is a KeyError, not a silent miss."""
        vector = np.zeros(len(self.codes), dtype=bool)
        for code in codes:
            try:
                vector[self._columns[code]] = True
            except KeyError:
                raise KeyError(f"code {code!r} is not in this ICD-{self.version} label set") from None
        return vector


def _dataset_file(dataset: str | Path, name: str) -> Path:
    path = Path(dataset) / name
    if not path.is_file():
        raise MissingInput(f"{path}: no such file (not an ICD dataset folder written by `cmbert finetune icd "
                           "prepare`?)")
    return path


def load_labels(dataset: str | Path) -> LabelSet:
    """The label set of a dataset folder (its labels.json)."""
    with open(_dataset_file(dataset, "labels.json"), encoding="utf-8") as file:
        meta = json.load(file)
    entries = meta["codes"]
    return LabelSet(
        version=meta["version"],
        codes=[entry["code"] for entry in entries],
        titles={entry["code"]: entry["title"] for entry in entries},
        kinds={entry["code"]: entry["kind"] for entry in entries},
        counts={entry["code"]: entry["count"] for entry in entries},
        train_counts={entry["code"]: entry["train_count"] for entry in entries},
        preprocess=meta.get("preprocess", "none"),
        max_words=meta.get("max_words"),
    )


def read_split(dataset: str | Path, split: str) -> Iterator[IcdExample]:
    """The notes of one split ("train", "val" or "test"), streamed in file order."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    with gzip.open(_dataset_file(dataset, f"{split}.jsonl.gz"), "rt", encoding="utf-8") as file:
        for line in file:
            record = json.loads(line)
            yield IcdExample(note_id=record["note_id"], subject_id=record["subject_id"], hadm_id=record["hadm_id"],
                             text=record["text"], codes=tuple(record["codes"]))


def label_matrix(examples: Iterable[IcdExample], labels: LabelSet) -> np.ndarray:
    """bool [n_examples, n_labels]: row i is the multi-hot of examples[i].codes."""
    rows = [labels.encode(example.codes) for example in examples]
    return np.stack(rows) if rows else np.zeros((0, len(labels.codes)), dtype=bool)
