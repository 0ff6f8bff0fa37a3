"""Embedded ICD datasets, their stratified re-splits, and their partitions over federated sites.

- `embed_dataset`: every note of a `cmbert finetune icd prepare` folder (all three splits) through the frozen encoder
  (`cmbert.core.embeddings.cached_embeddings`: cached by model hash and text, so the second split, the second head and
  the rerun embed nothing), with its labels as a sparse row list and its patient.
- `split_assignments`: split 0 is the dataset's own split.csv; split k >= 1 re-draws train/val/test patients with
  the dataset builder's own iterative multi-label stratification (`cmbert.finetune.icd.data.split_patients`, the dataset's
  fractions, seed + k). A re-split may put into test a patient whose note the encoder saw in MLM pretraining (only the
  dataset's own held-out patients are kept out of the corpus); the encoder is frozen and never saw a label, and the
  centralized and federated heads share every split, so their gap is unaffected.
- `partition_patients`: sites hold whole patients (a patient's notes never sit at two hospitals). ``iid``: patients
  dealt at random, equal counts. ``dirichlet``: label skew (Hsu et al. 2019, the usual non-IID benchmark) on each
  patient's primary code (their most frequent code over their notes; ties to the more frequent label): each code's
  patients go to the sites in proportions drawn from Dirichlet(alpha); train and validation use the same
  proportions, so a site validates on the case mix it trains on. Every site gets at least one training and one
  validation patient (proportions are re-drawn, up to 100 times, until they do).
- Site files (`write_site`, `read_site`): what one hospital holds, one .npz: train and validation embeddings, labels
  as CSR rows, the number of labels and a hash of the label list (the server refuses a site whose labels are in
  another order: averaging output rows of different codes would be silent garbage). In a real federation each
  hospital builds its own with `build_site` (`cmbert finetune federated site`) from its own `cmbert finetune icd
  prepare` folder, mapped onto the label list the federation agreed on (one labels.json shared by every site): codes
  outside that list are counted and dropped, notes left with no code are counted skips.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from cmbert.core.builds import split_patients
from cmbert.core.errors import MissingInput, UserError
from cmbert.data.icd_dataset import SPLITS, LabelSet, load_labels, read_split


@dataclass
class LabelRows:
    """Multi-label targets as CSR rows: row i's label columns are indices[indptr[i]:indptr[i + 1]]. MIMIC-IV's
    ICD-10 labels as a dense bool matrix would be ~1 GB; these are a few MB."""

    indptr: np.ndarray  # int64 [n + 1]
    indices: np.ndarray  # int32
    n_labels: int

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def take(self, rows: np.ndarray) -> LabelRows:
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.indptr[rows + 1] - self.indptr[rows]
        indptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        parts = [self.indices[self.indptr[r]:self.indptr[r + 1]] for r in rows]
        return LabelRows(indptr, np.concatenate(parts).astype(np.int32) if parts else self.indices[:0], self.n_labels)

    def dense(self, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """bool [rows, n_labels]."""
        part = self if rows is None else self.take(np.arange(len(self))[rows])
        out = np.zeros((len(part), self.n_labels), dtype=bool)
        out[np.repeat(np.arange(len(part)), np.diff(part.indptr)), part.indices] = True
        return out


@dataclass
class EmbeddedDataset:
    """Every note of an ICD dataset, in (train, val, test) file order."""

    note_ids: list[str]
    subjects: np.ndarray  # int64 [n]
    original_split: np.ndarray  # "train" / "val" / "test" [n]
    x: np.ndarray  # float32 [n, dim]
    y: LabelRows
    labels: LabelSet

    @property
    def label_hash(self) -> str:
        return label_hash(self.labels.codes)


def label_hash(codes: list[str]) -> str:
    return hashlib.sha256(json.dumps(codes).encode()).hexdigest()[:16]


def embed_dataset(dataset: str | Path, embed) -> EmbeddedDataset:
    """The dataset's notes embedded by `embed(texts) -> float32 [n, dim]` (the caller binds model, pooling, cache)."""
    labels = load_labels(dataset)
    columns = labels.index()
    note_ids, subjects, splits, texts, indptr, indices = [], [], [], [], [0], []
    for split in SPLITS:
        for example in read_split(dataset, split):
            note_ids.append(example.note_id)
            subjects.append(example.subject_id)
            splits.append(split)
            texts.append(example.text)
            indices.extend(columns[code] for code in example.codes)
            indptr.append(len(indices))
    x = np.asarray(embed(texts), dtype=np.float32)
    y = LabelRows(np.asarray(indptr, np.int64), np.asarray(indices, np.int32), len(labels.codes))
    return EmbeddedDataset(note_ids, np.asarray(subjects, np.int64), np.asarray(splits), x, y, labels)


def split_assignments(data: EmbeddedDataset, dataset: str | Path, index: int, seed: int) -> np.ndarray:
    """The split ("train" / "val" / "test") of every note under split `index` (see the module docstring)."""
    if index == 0:
        return data.original_split
    report = json.loads(Path(dataset, "report.json").read_text(encoding="utf-8"))
    patients = np.unique(data.subjects)
    row_of = {int(s): i for i, s in enumerate(patients)}
    columns: list[set[int]] = [set() for _ in patients]
    for note, subject in enumerate(data.subjects):
        columns[row_of[int(subject)]].update(data.y.indices[data.y.indptr[note]:data.y.indptr[note + 1]].tolist())
    assigned = split_patients([np.fromiter(c, np.int64, len(c)) for c in columns], data.y.n_labels, seed + index,
                              float(report["test_size"]), float(report["val_size"]))
    return np.asarray([assigned[row_of[int(s)]] for s in data.subjects])


def primary_codes(subjects: np.ndarray, y: LabelRows) -> dict[int, int]:
    """Each patient's most frequent label column over their notes (ties: the lower column, the more frequent code)."""
    counts: dict[int, dict[int, int]] = {}
    for note, subject in enumerate(subjects.tolist()):
        mine = counts.setdefault(subject, {})
        for column in y.indices[y.indptr[note]:y.indptr[note + 1]].tolist():
            mine[column] = mine.get(column, 0) + 1
    return {s: min(c, key=lambda column: (-c[column], column)) if c else -1 for s, c in counts.items()}


def partition_patients(train: list[int], val: list[int], primary: dict[int, int], clients: int, scheme: str,
                       alpha: float, seed: int) -> dict[int, int]:
    """subject_id -> site for the training and validation patients (see the module docstring)."""
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        site = {}
        for group in (train, val):
            order = rng.permutation(sorted(group))
            site.update({int(s): i % clients for i, s in enumerate(order)})
        return site
    if scheme != "dirichlet":
        raise UserError(f"unknown partition scheme {scheme!r}; expected iid or dirichlet")
    classes = sorted({primary[s] for s in (*train, *val)})
    for _ in range(100):
        shares = {c: rng.dirichlet(np.full(clients, alpha)) for c in classes}
        site = {}
        for group in (train, val):
            for c in classes:
                members = rng.permutation(sorted(s for s in group if primary[s] == c))
                cuts = np.round(np.cumsum(shares[c])[:-1] * len(members)).astype(int)
                for number, part in enumerate(np.split(members, cuts)):
                    site.update({int(s): number for s in part})
        if all({site[s] for s in group} == set(range(clients)) for group in (train, val)):
            return site
    raise UserError(f"dirichlet partition: after 100 draws some of the {clients} sites still had no training or no "
                    f"validation patient (alpha {alpha}, {len(train)} train / {len(val)} val patients); use fewer "
                    "clients or a larger alpha")


def write_site(path: str | Path, train_x: np.ndarray, train_y: LabelRows, val_x: np.ndarray, val_y: LabelRows,
               labels_hash: str) -> Path:
    """One site's data (module docstring), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, train_x=train_x, train_indptr=train_y.indptr, train_indices=train_y.indices, val_x=val_x,
             val_indptr=val_y.indptr, val_indices=val_y.indices, n_labels=np.int64(train_y.n_labels),
             label_hash=np.str_(labels_hash))
    tmp.replace(path)
    return path


@dataclass
class Site:
    train_x: np.ndarray
    train_y: LabelRows
    val_x: np.ndarray
    val_y: LabelRows
    label_hash: str


@lru_cache(maxsize=4)  # a simulated client process serves many rounds (and experiments) of the same few sites
def _read_site(path: str, mtime_ns: int) -> Site:
    with np.load(path) as f:
        n = int(f["n_labels"])
        return Site(f["train_x"], LabelRows(f["train_indptr"], f["train_indices"], n), f["val_x"],
                    LabelRows(f["val_indptr"], f["val_indices"], n), str(f["label_hash"]))


def read_site(path: str | Path) -> Site:
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: no site file (written by `cmbert.finetune.federated.data.write_site`)")
    return _read_site(str(path), path.stat().st_mtime_ns)


def build_site(dataset: str | Path, federation_labels: str | Path, embed, out: str | Path) -> dict:
    """A site file from one hospital's own ICD dataset folder (its train and val splits; its test split stays
    home for its own evaluation), its codes mapped onto the federation's label list (`federation_labels`: a
    labels.json, or a dataset folder holding one), embedded by `embed(texts)`. Returns what the run config needs
    (dim, n-labels, label-hash) and the counts of what was dropped."""
    labels_path = Path(federation_labels)
    labels = load_labels(labels_path.parent if labels_path.name == "labels.json" else labels_path)
    columns = labels.index()
    parts, report = {}, {"codes_outside_labels": 0, "notes_without_labels": 0}
    for split in ("train", "val"):
        texts, indptr, indices = [], [0], []
        for example in read_split(dataset, split):
            mine = [columns[code] for code in example.codes if code in columns]
            report["codes_outside_labels"] += len(example.codes) - len(mine)
            if not mine:
                report["notes_without_labels"] += 1
                continue
            texts.append(example.text)
            indices.extend(mine)
            indptr.append(len(indices))
        if not texts:
            raise UserError(f"{dataset}: no {split} note has a code of the federation's label list")
        parts[split] = (np.asarray(embed(texts), dtype=np.float32),
                        LabelRows(np.asarray(indptr, np.int64), np.asarray(indices, np.int32), len(labels.codes)))
        report[f"{split}_notes"] = len(texts)
    write_site(out, *parts["train"], *parts["val"], label_hash(labels.codes))
    return {**report, "dim": int(parts["train"][0].shape[1]), "n-labels": len(labels.codes),
            "label-hash": label_hash(labels.codes), "out": str(out)}
