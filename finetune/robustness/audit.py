"""`cmbert audit robustness`: LAPD's latent diagnosis flip rate (LDFR; Vijayaraj 2025, arXiv 2507.21188) of an
encoder's note embeddings, with the surface change of a fine-tuned ICD head beside it.

    from cmbert.finetune.robustness.audit import run_audit
    report = run_audit(mimic="runs/demo/mimic", out="runs/demo/robustness", model="runs/demo/model",
                       data="runs/demo/icd-data", icd_model="runs/demo/icd/runs/model-8k-seed0/model")

Steps:
1. Held-out notes: the discharge notes of the `--data` dataset's test split (a `cmbert finetune icd prepare` folder:
   patients the fine-tuned head never trained on), or without one the test patients of our own split of the MIMIC
   patients (`cmbert.finetune.icd.data.split_patients`, stratified on the gold classes, `seed`). The report says which.
   `max_notes` of them are sampled (seeded). Text is the note as stored in MIMIC (the dataset's own text when it
   was not preprocessed), so the numeric operator sees its numbers and the ICD head applies its own text rules.
2. Gold diagnosis: the CCSR body system (CIR, RSP, DIG, ...: 22 classes, about the ICD-10-CM chapters) of the
   admission's principal diagnosis (hosp/diagnoses_icd seq_num 1), mapped by `cmbert.data.categories.CodeMapper`
   ("ccsr": ICD-10-CM directly, ICD-9-CM through the CMS GEMs), so ICD-9 and ICD-10 admissions share classes. A
   few hundred notes cannot support hundreds of diagnosis classes; body systems give a boundary with enough notes
   on each side. Classes with fewer than `min_class_notes` sampled notes are merged into "other" (counted), and an
   "other" still that small is dropped (counted).
3. Perturbations (`cmbert.finetune.robustness.perturb`): mask, negate, synonym, numeric_within, numeric_across, each note
   by each operator (a note an operator cannot change is a counted skip for it). The perturbed notes are written
   to OUT/perturbed/<operator>.jsonl and nowhere else.
4. Embeddings (`cmbert.core.embeddings.cached_embeddings`: batched, cached by model hash and text) of the clean and
   perturbed notes; PCA fit on the clean embeddings only (k = `components`, at most n - 1); a classifier on the
   clean PCA coordinates and gold classes: logistic regression (standardised components, balanced class weights,
   so the boundary is not "always the majority class") or nearest centroid. Its cross-validated clean accuracy
   (PCA and classifier refit in each fold) beside the majority-class rate says whether the boundary means anything.
5. LDFR(op) = the fraction of the notes op changed whose predicted class changes (skipped notes are not in the
   denominator), with a percentile bootstrap 95 % CI over notes; numeric_across minus numeric_within on the same
   notes, paired. Displacement: mean cosine distance and L2 distance relative to the clean vector's norm, next to
   the median cosine distance between two different clean notes (the scale of "far"). With `icd_model`: the fine-
   tuned head's predicted code set (scores above its stored threshold) before and after: the fraction of notes whose
   set changes and the mean Jaccard of the two sets (two empty sets count 1).
6. OUT (built in OUT.partial/, renamed at the end): report.json (numbers, names and paths; no note text),
   robustness.png (LDFR with CIs, displacement, surface change side by side), per_note.csv (ids, classes and
   numbers per note and operator), perturbed/. Logs carry counts only.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmbert.core.errors import MissingInput, UserError
from cmbert.finetune.robustness.perturb import OPERATORS, Perturbation, perturb

FORMAT = "cmbert-robustness/1"
CLASSIFIERS = ("logistic", "centroid")
MIN_NOTES = 10  # fewer held-out notes than this make neither a PCA nor a classifier worth reading
OTHER = "other"
OUTPUT_FILES = ("report.json", "robustness.png", "per_note.csv", "perturbed",
                "config.yaml", "provenance.json")  # the last two: `cmbert audit robustness` writes them
PARTIAL_MARKER = ".robustness_partial"
DIAGNOSES_TABLE = "hosp/diagnoses_icd"
NOTES_TABLE = "note/discharge"
_NEEDS = "the robustness audit reads hosp/diagnoses_icd and note/discharge"
GOLD_SCHEME = ("CCSR body system of the admission's principal diagnosis (diagnoses_icd seq_num 1; ICD-9 through the "
               "CMS GEMs)")


@dataclass
class HeldOutNote:
    note_id: str
    subject_id: int
    hadm_id: int
    gold: str
    text: str = ""


# ------------------------------------------------------------------------------------------------------ gold labels


def principal_diagnoses(path: Path, counter=None) -> dict[int, tuple[str, int]]:
    """hadm_id -> (code, icd_version) of each admission's seq_num 1 diagnosis (streamed; {hadm: code} only)."""
    from cmbert.data.readers import read_icd_codes

    out: dict[int, tuple[str, int]] = {}
    for row in read_icd_codes(path, None, counter):
        if row.seq_num == 1:
            out.setdefault(row.hadm_id, (row.code, row.version))
    return out


def body_system_labeller() -> Callable[[str, int], str | None]:
    """(code, icd_version) -> CCSR body system id ("CIR"), or None when the code maps nowhere."""
    from cmbert.data.categories import CodeMapper

    mapper = CodeMapper("ccsr")

    def label(code: str, version: int) -> str | None:
        categories = mapper.map(code, version)
        return categories[0][:3] if categories else None

    return label


def merge_rare_classes(golds: Sequence[str], min_notes: int) -> tuple[list[str | None], dict]:
    """Classes with fewer than `min_notes` notes become OTHER; an OTHER still that small is dropped (None)."""
    counts = Counter(golds)
    merged = [g if counts[g] >= min_notes else OTHER for g in golds]
    rare = {g: n for g, n in sorted(counts.items()) if n < min_notes}
    dropped = 0
    if 0 < sum(rare.values()) < min_notes:
        dropped = sum(rare.values())
        merged = [None if g == OTHER else g for g in merged]
    return merged, {"merged_into_other": rare, "dropped_small_other": dropped}


# --------------------------------------------------------------------------------------------------- held-out notes


def _sample(n: int, max_notes: int | None, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if max_notes is None or n <= max_notes:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_notes, replace=False))


def held_out_notes(mimic: Path, data: Path | None, splits: Sequence[str], seed: int, max_notes: int | None,
                   test_size: float, log: Callable[[str], None]) -> tuple[list[HeldOutNote], dict]:
    """The sampled held-out notes with gold classes (before merging) and texts, and the report's `held_out` part."""
    from cmbert.core.builds import mimic_table, split_patients
    from cmbert.core.io import SkipCounter
    from cmbert.data.icd_dataset import load_labels, read_split
    from cmbert.data.readers import read_mimic_notes

    diagnoses_path = mimic_table(mimic, DIAGNOSES_TABLE, _NEEDS)
    notes_path = mimic_table(mimic, NOTES_TABLE, _NEEDS)
    label = body_system_labeller()
    principal = principal_diagnoses(diagnoses_path)
    log(f"{len(principal):,} admissions with a principal diagnosis")
    selection = SkipCounter()
    info: dict = {"splits": list(splits), "seed": seed}
    candidates: list[HeldOutNote] = []
    texts: dict[str, str] = {}

    def gold_of(note_id: str, hadm_id: int | None) -> str | None:
        if hadm_id is None:
            selection.skip("no_hadm_id", f"note_id {note_id}")
            return None
        if hadm_id not in principal:
            selection.skip("no_principal_diagnosis", f"note_id {note_id}")
            return None
        gold = label(*principal[hadm_id])
        if gold is None:
            selection.skip("principal_diagnosis_unmapped", f"note_id {note_id}")
        return gold

    if data is not None:
        labels = load_labels(data)
        own_text = labels.preprocess == "none" and labels.max_words is None
        report_path = data / "report.json"
        source_notes = json.loads(report_path.read_text()).get("inputs", {}).get("notes") if report_path.is_file() \
            else None
        same = source_notes is not None and Path(source_notes).resolve() == notes_path.resolve()
        if not same:
            log(f"warning: {data} was prepared from {source_notes}, not {notes_path}; its note ids are looked up there")
        info.update(source="icd-data", data=str(data), text=("dataset" if own_text else "mimic"),
                    dataset_notes=source_notes, same_mimic=same)
        for split in splits:
            for example in read_split(data, split):
                selection.read += 1
                if not example.text.strip():
                    selection.skip("empty_text", f"note_id {example.note_id}")
                    continue
                if (gold := gold_of(example.note_id, example.hadm_id)) is None:
                    continue
                selection.kept += 1
                candidates.append(HeldOutNote(example.note_id, example.subject_id, example.hadm_id, gold))
    else:
        reading = SkipCounter()
        by_subject: dict[int, list[HeldOutNote]] = {}
        for note in read_mimic_notes(notes_path, reading):  # ids only: texts are read again for the sample
            selection.read += 1
            if (gold := gold_of(note.note_id, note.hadm_id)) is None:
                continue
            selection.kept += 1
            by_subject.setdefault(note.subject_id, []).append(HeldOutNote(note.note_id, note.subject_id,
                                                                          note.hadm_id, gold))
        subjects = sorted(by_subject)
        classes = sorted({n.gold for notes in by_subject.values() for n in notes})
        column = {c: i for i, c in enumerate(classes)}
        columns = [np.asarray(sorted({column[n.gold] for n in by_subject[s]}), dtype=np.int32) for s in subjects]
        val_size = min(0.10, (1 - test_size) / 2)
        split_of = split_patients(columns, len(classes), seed, test_size, val_size)
        held = [s for s, split in zip(subjects, split_of, strict=True) if split == "test"]
        candidates = [n for s in held for n in by_subject[s]]
        candidates.sort(key=lambda n: n.note_id)
        info.update(source="own-split", data=None, text="mimic", test_size=test_size, val_size=val_size,
                    patients_split=len(subjects), note_reading=reading.as_dict())
        info["splits"] = ["test"]
    chosen = [candidates[i] for i in _sample(len(candidates), max_notes, seed)]
    info.update(patients=len({n.subject_id for n in chosen}), notes_available=len(candidates),
                notes_sampled=len(chosen), max_notes=max_notes, selection=selection.as_dict())
    wanted = {n.note_id for n in chosen}
    if info["text"] == "dataset":  # texts are read for the sample only, so memory does not grow with the split
        for split in splits:
            texts.update((e.note_id, e.text) for e in read_split(data, split) if e.note_id in wanted)
    elif wanted:
        log(f"reading the text of {len(wanted):,} sampled notes from {notes_path}")
        for note in read_mimic_notes(notes_path):
            if note.note_id in wanted:
                texts[note.note_id] = note.text
    missing = [n for n in chosen if n.note_id not in texts]
    info["not_in_mimic_notes"] = len(missing)
    for note in chosen:
        note.text = texts.get(note.note_id, "")
    return [n for n in chosen if n.text.strip()], info


# ---------------------------------------------------------------------------------------------------- latent space


@dataclass
class LatentClassifier:
    """PCA fit on clean embeddings, then a classifier on the components (see the module docstring)."""

    pca: object
    scaler: object | None
    model: object
    classes: list[str]

    def coordinates(self, vectors: np.ndarray) -> np.ndarray:
        z = self.pca.transform(vectors)
        return self.scaler.transform(z) if self.scaler is not None else z

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        """Class indices into `classes`."""
        return np.asarray(self.model.predict(self.coordinates(vectors)), dtype=np.int64)


def _components(components: int, n: int, dim: int) -> int:
    return max(1, min(components, n - 1, dim))


def fit_latent_classifier(clean: np.ndarray, labels: Sequence[str], components: int = 16,
                          classifier: str = "logistic", seed: int = 0) -> LatentClassifier:
    """PCA (k = min(components, n - 1, dim)) on `clean` [n, dim], then the classifier on its coordinates."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestCentroid
    from sklearn.preprocessing import StandardScaler

    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {', '.join(CLASSIFIERS)}, not {classifier!r}")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise UserError(f"the latent classifier needs at least 2 gold classes, got {len(classes)}")
    y = np.asarray([classes.index(label) for label in labels])
    pca = PCA(n_components=_components(components, len(clean), clean.shape[1]), random_state=seed).fit(clean)
    z = pca.transform(clean)
    if classifier == "logistic":
        scaler = StandardScaler().fit(z)
        model = LogisticRegression(max_iter=5000, class_weight="balanced", random_state=seed)
        model.fit(scaler.transform(z), y)
        return LatentClassifier(pca, scaler, model, classes)
    return LatentClassifier(pca, None, NearestCentroid().fit(z, y), classes)


def cross_validated_accuracy(clean: np.ndarray, labels: Sequence[str], components: int, classifier: str,
                             seed: int, folds: int = 5) -> dict:
    """Accuracy and balanced accuracy of PCA + classifier refit on each fold's training notes (stratified k-fold;
    k at most the smallest class), beside the majority-class rate and chance."""
    from sklearn.model_selection import StratifiedKFold

    classes = sorted(set(labels))
    y = np.asarray([classes.index(label) for label in labels])
    smallest = int(np.bincount(y).min())
    k = min(folds, smallest)
    out = {"folds": k, "majority_rate": float(np.bincount(y).max() / len(y)), "chance_balanced": 1 / len(classes)}
    if k < 2:
        return {**out, "accuracy": None, "balanced_accuracy": None}
    predicted = np.zeros_like(y)
    for train, test in StratifiedKFold(k, shuffle=True, random_state=seed).split(clean, y):
        fitted = fit_latent_classifier(clean[train], [labels[i] for i in train], components, classifier, seed)
        predicted[test] = [classes.index(fitted.classes[c]) for c in fitted.predict(clean[test])]
    recall = [float(np.mean(predicted[y == c] == c)) for c in range(len(classes))]
    return {**out, "accuracy": float(np.mean(predicted == y)), "balanced_accuracy": float(np.mean(recall))}


def bootstrap_ci(values: np.ndarray, reps: int = 1000, seed: int = 0, level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap CI of the mean of `values` over resampled notes; None for no values or no reps."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0 or reps < 1:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(reps, len(values)))].mean(1)
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]


def displacement(clean: np.ndarray, perturbed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: cosine distance 1 - cos(clean, perturbed), and ||perturbed - clean|| / ||clean||."""
    clean, perturbed = clean.astype(np.float64), perturbed.astype(np.float64)
    norms = np.linalg.norm(clean, axis=1)
    cosine = (clean * perturbed).sum(1) / np.maximum(norms * np.linalg.norm(perturbed, axis=1), 1e-12)
    return 1 - cosine, np.linalg.norm(perturbed - clean, axis=1) / np.maximum(norms, 1e-12)


def pair_distance(clean: np.ndarray, seed: int, pairs: int = 2000) -> float | None:
    """Median cosine distance between two different clean notes: the scale a displacement is read against."""
    if len(clean) < 2:
        return None
    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(clean), pairs)
    b = (a + rng.integers(1, len(clean), pairs)) % len(clean)
    return float(np.median(displacement(clean[a], clean[b])[0]))


def latent_flips(classifier: LatentClassifier, clean: np.ndarray,
                 perturbed: dict[str, tuple[np.ndarray, np.ndarray]], bootstrap: int = 1000,
                 seed: int = 0) -> dict[str, dict]:
    """Per operator: LDFR with its bootstrap CI and the displacement. `perturbed[op]` = (indices of the clean notes
    op changed, their perturbed vectors); the arrays per note come back under "per_note" (flipped, predictions,
    cosine distance, relative L2) for the per-note table."""
    clean_pred = classifier.predict(clean)
    out = {}
    for op, (rows, vectors) in perturbed.items():
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            out[op] = {"n": 0, "ldfr": None, "ldfr_ci95": None, "flips": 0, "cosine_distance_mean": None,
                       "relative_l2_mean": None, "per_note": None}
            continue
        after = classifier.predict(vectors)
        flipped = after != clean_pred[rows]
        cosine, l2 = displacement(clean[rows], vectors)
        out[op] = {"n": int(len(rows)), "ldfr": float(flipped.mean()),
                   "ldfr_ci95": bootstrap_ci(flipped, bootstrap, seed), "flips": int(flipped.sum()),
                   "cosine_distance_mean": float(cosine.mean()),
                   "cosine_distance_median": float(np.median(cosine)), "relative_l2_mean": float(l2.mean()),
                   "per_note": {"rows": rows, "before": clean_pred[rows], "after": after, "flipped": flipped,
                                "cosine": cosine, "relative_l2": l2}}
    return out


def paired_difference(a: dict, b: dict, bootstrap: int, seed: int) -> dict | None:
    """Flip rate of `a` minus `b` on the notes both changed, with a paired bootstrap CI."""
    if not a.get("per_note") or not b.get("per_note"):
        return None
    flips_a = dict(zip(a["per_note"]["rows"].tolist(), a["per_note"]["flipped"].tolist(), strict=True))
    flips_b = dict(zip(b["per_note"]["rows"].tolist(), b["per_note"]["flipped"].tolist(), strict=True))
    both = sorted(set(flips_a) & set(flips_b))
    if not both:
        return None
    diff = np.asarray([float(flips_a[i]) - float(flips_b[i]) for i in both])
    return {"n": len(both), "difference": float(diff.mean()), "ci95": bootstrap_ci(diff, bootstrap, seed)}


# ------------------------------------------------------------------------------------------------- surface change


def jaccard(a: set, b: set) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def surface_changes(icd_model: Path, clean_texts: Sequence[str], perturbed: dict[str, tuple[np.ndarray, list[str]]],
                    device: str, precision: str) -> dict[str, dict]:
    """Per operator: the ICD head's predicted code sets (above its threshold) before and after, as the fraction of
    notes whose set changes and the mean Jaccard, plus per-note arrays."""
    from cmbert.core.label_attention import predict

    keyed = [(f"clean:{i}", t) for i, t in enumerate(clean_texts)]
    for op, (rows, texts) in perturbed.items():
        keyed += [(f"{op}:{row}", text) for row, text in zip(rows.tolist(), texts, strict=True)]
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' weight-loading bar; our log line says what runs
    try:
        codes = {p["id"]: {c["code"] for c in p["codes"]} for p in predict(icd_model, keyed, device=device,
                                                                          precision=precision)}
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    out = {}
    for op, (rows, _) in perturbed.items():
        if len(rows) == 0:
            out[op] = {"n": 0, "changed_fraction": None, "jaccard_mean": None, "per_note": None}
            continue
        pairs = [(codes[f"clean:{row}"], codes[f"{op}:{row}"]) for row in rows.tolist()]
        changed = np.asarray([a != b for a, b in pairs])
        similarity = np.asarray([jaccard(a, b) for a, b in pairs])
        out[op] = {"n": len(rows), "changed_fraction": float(changed.mean()), "jaccard_mean": float(similarity.mean()),
                   "per_note": {"changed": changed, "jaccard": similarity}}
    out["clean_codes_per_note_mean"] = float(np.mean([len(codes[f"clean:{i}"]) for i in range(len(clean_texts))]))
    return out


# ------------------------------------------------------------------------------------------------------------ plot


def plot_report(report: dict, path: Path) -> None:
    """robustness.png: LDFR with 95 % CIs, displacement, and the ICD head's surface change, per operator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = list(report["operators"])
    x = np.arange(len(ops))
    rows = [report["operators"][op] for op in ops]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ldfr = np.asarray([r["ldfr"] if r["ldfr"] is not None else np.nan for r in rows])
    low = np.asarray([r["ldfr"] - r["ldfr_ci95"][0] if r["ldfr_ci95"] else 0 for r in rows])
    high = np.asarray([r["ldfr_ci95"][1] - r["ldfr"] if r["ldfr_ci95"] else 0 for r in rows])
    axes[0].bar(x, ldfr, yerr=[low, high], capsize=4, color="tab:red")
    axes[0].set_title(f"LDFR ({report['latent']['classifier']}, k={report['latent']['components']}), 95% CI")
    axes[0].set_ylabel("fraction of changed notes whose class flips")
    top = np.nanmax(np.concatenate([ldfr + high, [0.0]]))
    axes[0].set_ylim(0, max(0.05, 1.25 * top))
    cosine = np.asarray([r["cosine_distance_mean"] if r["cosine_distance_mean"] else np.nan for r in rows])
    axes[1].bar(x, cosine, color="tab:blue")
    axes[1].set_yscale("log")  # one edited word moves a note orders of magnitude less than another note is away
    axes[1].set_title("mean embedding displacement (cosine distance, log)")
    for i, value in enumerate(cosine):
        if np.isfinite(value):
            axes[1].text(i, value, f"{value:.1e}", ha="center", va="bottom", fontsize=8)
    reference = report["latent"].get("clean_pair_cosine_distance_median")
    if reference:
        axes[1].axhline(reference, color="gray", ls="--", lw=1)
        axes[1].text(len(ops) - 0.5, reference, "median between two clean notes", ha="right", va="bottom",
                     fontsize=8, color="gray")
    if report.get("icd_model"):
        changed = [r["surface"]["changed_fraction"] if r["surface"]["changed_fraction"] is not None else np.nan
                   for r in rows]
        similarity = [r["surface"]["jaccard_mean"] if r["surface"]["jaccard_mean"] is not None else np.nan
                      for r in rows]
        axes[2].bar(x - 0.2, changed, 0.4, color="tab:orange", label="code set changed")
        axes[2].bar(x + 0.2, similarity, 0.4, color="tab:green", label="mean Jaccard")
        axes[2].set_ylim(0, 1.2)
        axes[2].legend(fontsize=8, loc="upper center", ncol=2)
        axes[2].set_title("fine-tuned ICD head: surface change")
    else:
        axes[2].text(0.5, 0.5, "no --icd-model given", ha="center", va="center", transform=axes[2].transAxes)
        axes[2].set_title("fine-tuned ICD head: surface change")
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels([f"{op.replace('_', chr(10))}\nn={r['notes_changed']}"
                            for op, r in zip(ops, rows, strict=True)], fontsize=8)
    latent = report["latent"]
    accuracy = latent["clean_cv"]["balanced_accuracy"]
    shown = f"{accuracy:.2f}" if accuracy is not None else "n/a"
    fig.suptitle(f"Robustness audit: {report['held_out']['notes_used']} held-out notes, {len(latent['classes'])} "
                 f"gold classes (majority {latent['clean_cv']['majority_rate']:.2f}); clean CV balanced accuracy "
                 f"{shown} (chance {latent['clean_cv']['chance_balanced']:.2f})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------------- run


def _write_perturbed(folder: Path, notes: list[HeldOutNote], results: dict[str, list[Perturbation]]) -> None:
    folder.mkdir()
    for op, per_note in results.items():
        with open(folder / f"{op}.jsonl", "w", encoding="utf-8") as file:
            for note, result in zip(notes, per_note, strict=True):
                record = {"note_id": note.note_id, "operator": op}
                if result.skip is not None:
                    record["skipped"] = result.skip
                else:
                    record.update(changes=[c.as_dict() for c in result.changes], text=result.text)
                file.write(json.dumps(record, ensure_ascii=False) + "\n")


def _operator_summary(op: str, results: list[Perturbation]) -> dict:
    """Counts of what op did (no text): skips by reason, and per-operator detail."""
    skipped = Counter(r.skip for r in results if r.skip is not None)
    changes = [c for r in results for c in r.changes]
    summary: dict = {"notes_changed": sum(r.skip is None for r in results), "skipped": dict(sorted(skipped.items())),
                     "edits": len(changes)}
    if op.startswith("numeric"):
        from cmbert.finetune.robustness.perturb import QUANTITIES

        step = {q.name: q.step for q in QUANTITIES}
        summary["quantities"] = dict(Counter(c.quantity for c in changes).most_common())
        summary["crossed"] = sum(bool(c.crossed) for c in changes)
        summary["mean_abs_delta_steps"] = (float(np.mean([abs(c.value_after - c.value_before) / step[c.quantity]
                                                          for c in changes])) if changes else None)
    else:
        summary["findings"] = dict(Counter(c.finding for c in changes).most_common(10))
    if op == "synonym":
        summary["synonym_sources"] = dict(Counter(c.source.split(":")[0] for c in changes).most_common())
    return summary


def _audit(work: Path, mimic: Path, model: Path, icd_model: Path | None, data: Path | None, splits: Sequence[str],
           max_notes: int | None, seed: int, pooling: str, components: int, classifier: str, min_class_notes: int,
           edits: int, max_tokens: int, chunk_length: int | None, cache_dir: Path, device: str, precision: str,
           bootstrap: int, test_size: float, log: Callable[[str], None], progress: bool) -> dict:
    from cmbert.core.embeddings import cached_embeddings, context_length, model_config, model_hash
    from cmbert.core.runtime import device_and_dtype
    from cmbert.data.categories import CCSR_BODY_SYSTEMS

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    notes, held_out = held_out_notes(mimic, data, splits, seed, max_notes, test_size, log)
    merged, merging = merge_rare_classes([n.gold for n in notes], min_class_notes)
    notes = [n for n, g in zip(notes, merged, strict=True) if g is not None]
    golds = [g for g in merged if g is not None]
    classes = Counter(golds)
    held_out.update(notes_used=len(notes), **merging)
    if len(notes) < MIN_NOTES:
        raise UserError(f"the robustness audit needs at least {MIN_NOTES} held-out notes with a gold diagnosis; "
                        f"found {len(notes)} (raise --max-notes, use a larger split, or without --data a larger "
                        "--test-size)")
    if len(classes) < 2:
        raise UserError(f"the robustness audit needs at least 2 gold classes with >= {min_class_notes} held-out "
                        f"notes each (--min-class-notes); found {dict(classes)}")
    log(f"{len(notes)} held-out notes ({held_out['source']}), {len(classes)} gold classes")
    seconds["notes"] = time.perf_counter() - started

    # --- perturb every note by every operator; the text goes to OUT/perturbed only
    t = time.perf_counter()
    results = {op: [perturb(n.text, op, seed, edits) for n in notes] for op in OPERATORS}
    _write_perturbed(work / "perturbed", notes, results)
    summaries = {op: _operator_summary(op, per_note) for op, per_note in results.items()}
    log("perturbed: " + ", ".join(f"{op} {s['notes_changed']}" for op, s in summaries.items()))
    seconds["perturb"] = time.perf_counter() - t

    # --- embeddings, clean and perturbed (two cache files: a rerun with another seed reuses the clean one)
    t = time.perf_counter()
    dev, dtype = device_and_dtype(precision, device)
    context = context_length(model)
    chunk = min(chunk_length or context, context)
    options = dict(max_tokens=max_tokens, chunk_length=chunk, pooling=pooling, device=dev, dtype=dtype,
                   progress=progress)
    clean = cached_embeddings(cache_dir, model, [n.text for n in notes], **options)
    rows = {op: np.asarray([i for i, r in enumerate(per_note) if r.skip is None], dtype=np.int64)
            for op, per_note in results.items()}
    texts = {op: [results[op][i].text for i in rows[op]] for op in OPERATORS}
    flat = [text for op in OPERATORS for text in texts[op]]
    vectors = cached_embeddings(cache_dir, model, flat, **options) if flat else np.zeros((0, clean.shape[1]))
    offsets = np.cumsum([0] + [len(texts[op]) for op in OPERATORS])
    perturbed = {op: (rows[op], vectors[offsets[i]:offsets[i + 1]]) for i, op in enumerate(OPERATORS)}
    seconds["embed"] = time.perf_counter() - t

    # --- latent space: PCA + classifier on clean, flips per operator
    t = time.perf_counter()
    fitted = fit_latent_classifier(clean, golds, components, classifier, seed)
    flips = latent_flips(fitted, clean, perturbed, bootstrap, seed)
    cv = cross_validated_accuracy(clean, golds, components, classifier, seed)
    clean_pred = fitted.predict(clean)
    gold_index = np.asarray([fitted.classes.index(g) for g in golds])
    latent = {"components": int(fitted.pca.n_components_), "components_requested": components,
              "explained_variance": float(np.sum(fitted.pca.explained_variance_ratio_)), "classifier": classifier,
              "classes": {c: {"notes": classes[c], "name": CCSR_BODY_SYSTEMS.get(c, c)} for c in fitted.classes},
              "clean_accuracy_fit": float(np.mean(clean_pred == gold_index)), "clean_cv": cv,
              "clean_pair_cosine_distance_median": pair_distance(clean, seed)}
    seconds["latent"] = time.perf_counter() - t

    surface = None
    if icd_model is not None:
        t = time.perf_counter()
        log(f"ICD head on {len(notes) + len(flat):,} clean and perturbed notes")
        surface = surface_changes(icd_model, [n.text for n in notes],
                                  {op: (rows[op], texts[op]) for op in OPERATORS}, device, precision)
        seconds["icd"] = time.perf_counter() - t

    operators = {}
    for op in OPERATORS:
        entry = {**summaries[op], **{k: v for k, v in flips[op].items() if k not in ("per_note", "n")}}
        if surface is not None:
            entry["surface"] = {k: v for k, v in surface[op].items() if k not in ("per_note", "n")}
        operators[op] = entry
    _write_per_note(work / "per_note.csv", notes, golds, fitted.classes, clean_pred, results, flips, surface)

    from cmbert.core.label_attention import ICD_JSON

    icd_meta = None
    if icd_model is not None:
        meta = json.loads((icd_model / ICD_JSON).read_text())
        icd_meta = {"path": str(icd_model.resolve()), "hash": model_hash(icd_model), "threshold": meta["threshold"],
                    "codes": len(meta["labels"]), "icd_version": meta.get("icd_version"),
                    "clean_codes_per_note_mean": surface["clean_codes_per_note_mean"]}
    seconds["total"] = time.perf_counter() - started
    return {
        "format": FORMAT,
        "model": {"path": str(model.resolve()), "hash": model_hash(model), "model_type": model_config(model).get(
            "model_type"), "pooling": pooling, "max_tokens": max_tokens, "chunk_length": chunk,
            "dtype": str(dtype).removeprefix("torch."), "dim": int(clean.shape[1])},
        "icd_model": icd_meta,
        "seed": seed, "edits_per_note": edits, "bootstrap": bootstrap,
        "held_out": held_out,
        "gold": {"scheme": GOLD_SCHEME, "min_class_notes": min_class_notes},
        "latent": latent,
        "operators": operators,
        "numeric_across_minus_within": paired_difference(flips["numeric_across"], flips["numeric_within"],
                                                         bootstrap, seed),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "provenance": _provenance(dev),
    }


def _write_per_note(path: Path, notes: list[HeldOutNote], golds: list[str], classes: list[str],
                    clean_pred: np.ndarray, results: dict[str, list[Perturbation]], flips: dict, surface: dict | None
                    ) -> None:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["note_id", "gold", "clean_prediction", "operator", "skipped", "perturbed_prediction",
                         "flipped", "cosine_distance", "relative_l2", "icd_codes_changed", "icd_jaccard"])
        for op, per_note in results.items():
            arrays = flips[op]["per_note"]
            position = {row: k for k, row in enumerate(arrays["rows"].tolist())} if arrays else {}
            icd = surface[op]["per_note"] if surface is not None else None
            for i, (note, result) in enumerate(zip(notes, per_note, strict=True)):
                row = [note.note_id, golds[i], classes[clean_pred[i]], op, result.skip or ""]
                if i in position:
                    k = position[i]
                    row += [classes[arrays["after"][k]], int(arrays["flipped"][k]), f"{arrays['cosine'][k]:.6g}",
                            f"{arrays['relative_l2'][k]:.6g}"]
                    row += [int(icd["changed"][k]), f"{icd['jaccard'][k]:.4g}"] if icd is not None else ["", ""]
                else:
                    row += [""] * 6
                writer.writerow(row)


def _provenance(device) -> dict:
    import sklearn

    from cmbert.core.runtime import provenance

    return {**provenance(device), "sklearn": sklearn.__version__}


def run_audit(mimic: str | Path, out: str | Path, model: str | Path | None = None, icd_model: str | Path | None = None,
              data: str | Path | None = None, splits: Sequence[str] = ("test",), max_notes: int | None = 300,
              seed: int = 0, pooling: str = "mean", components: int = 16, classifier: str = "logistic",
              min_class_notes: int = 10, edits: int = 1, max_tokens: int = 8192, chunk_length: int | None = None,
              cache_dir: str | Path | None = None, device: str = "auto", precision: str = "fp32",
              bootstrap: int = 1000, test_size: float = 0.15, overwrite: bool = False, verbose: bool = True,
              progress: bool = True) -> dict:
    """The audit of the module docstring into `out`; returns the report (also OUT/report.json).

    `model`: any local encoder folder `cmbert.core.embeddings.load_encoder` reads; default: the `icd_model`'s own
    (fine-tuned) encoder. `data`: a `cmbert finetune icd prepare` folder whose `splits` hold the held-out notes.
    `precision` is fp32 by default: on the demo encoder, bf16 rounding moves a note's mean embedding a sixth as far
    as one masked word does (cosine distance 6.5e-7 against 3.7e-6), noise a flip rate should not include."""
    from cmbert.core.builds import build_atomically, check_output, stderr_log
    from cmbert.core.embeddings import POOLINGS
    from cmbert.core.runtime import default_cache_dir
    from cmbert.data.icd_dataset import SPLITS

    mimic, out = Path(mimic), Path(out)
    if not mimic.is_dir():
        raise MissingInput(f"{mimic}: no such folder (expected a MIMIC-IV tree with hosp/ and note/)")
    if model is None and icd_model is None:
        raise UserError("give --model (an encoder folder) or --icd-model (whose encoder is then used)")
    icd_model = Path(icd_model) if icd_model is not None else None
    if icd_model is not None and not (icd_model / "icd.json").is_file():
        raise MissingInput(f"{icd_model}: no icd.json; not an ICD model folder from `cmbert finetune icd train`")
    model = Path(model) if model is not None else icd_model
    data = Path(data) if data is not None else None
    if pooling not in POOLINGS:
        raise UserError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {', '.join(CLASSIFIERS)}, not {classifier!r}")
    if bad := [s for s in splits if s not in SPLITS]:
        raise UserError(f"unknown split(s) {', '.join(bad)}; expected {', '.join(SPLITS)}")
    if min_class_notes < 2 or components < 1 or edits < 1 or bootstrap < 0 or (max_notes is not None and max_notes < 1):
        raise UserError("need min_class_notes >= 2, components >= 1, edits >= 1, bootstrap >= 0, max_notes >= 1")
    if not 0 < test_size < 0.9:
        raise UserError(f"test_size must be in (0, 0.9), got {test_size}")
    check_output(out, overwrite, OUTPUT_FILES, {"report.json"}, "a robustness audit")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "embeddings"

    log = stderr_log("audit robustness", verbose)
    if icd_model is not None and data is None:
        log("warning: without --data the held-out patients are our own split; the ICD head may have trained on them")

    def build(work: Path) -> dict:
        report = _audit(work, mimic, model, icd_model, data, splits, max_notes, seed, pooling, components,
                        classifier, min_class_notes, edits, max_tokens, chunk_length, cache_dir, device, precision,
                        bootstrap, test_size, log, progress)
        plot_report(report, work / "robustness.png")
        return report

    report = build_atomically(out, PARTIAL_MARKER, "audit robustness", build, log)
    log(f"wrote {out}: report.json, robustness.png, per_note.csv, perturbed/")
    return report


def audit_from_config(cfg) -> dict:
    """`run_audit` with the settings of an `AuditConfig` (cmbert.finetune.robustness.config)."""
    return run_audit(cfg.mimic, cfg.out, model=cfg.model, icd_model=cfg.icd_model, data=cfg.data, splits=cfg.splits,
                     max_notes=cfg.max_notes, seed=cfg.seed, pooling=cfg.pooling, components=cfg.components,
                     classifier=cfg.classifier, min_class_notes=cfg.min_class_notes, edits=cfg.edits,
                     max_tokens=cfg.max_tokens, chunk_length=cfg.chunk_length, cache_dir=cfg.cache,
                     device=cfg.device, precision=cfg.precision, bootstrap=cfg.bootstrap, test_size=cfg.test_size,
                     overwrite=cfg.overwrite)


def format_audit(report: dict, out: str) -> str:
    """What `cmbert audit robustness` prints: the clean classifier's accuracy, then per operator LDFR with its CI,
    displacement and the ICD head's surface change (numbers only); the files written go to stderr."""
    cv = report["latent"]["clean_cv"]
    lines = [f"{report['held_out']['notes_used']} held-out notes ({report['held_out']['source']}), "
             f"{len(report['latent']['classes'])} classes, PCA k={report['latent']['components']}, "
             f"{report['latent']['classifier']}: clean CV balanced accuracy {cv['balanced_accuracy']}, majority rate "
             f"{cv['majority_rate']:.3f}",
             f"{'operator':<16}{'changed':>8}{'skipped':>8}  {'LDFR [95% CI]':<22}{'cos dist':>10}{'rel L2':>9}"
             f"{'ICD changed':>13}{'Jaccard':>9}"]

    def fmt(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for op, s in report["operators"].items():
        ci = s["ldfr_ci95"]
        ldfr = f"{s['ldfr']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if s["ldfr"] is not None and ci else "-"
        surface = s.get("surface") or {}
        lines.append(f"{op:<16}{s['notes_changed']:>8}{sum(s['skipped'].values()):>8}  {ldfr:<22}"
                     f"{fmt(s['cosine_distance_mean'], '.2e'):>10}{fmt(s['relative_l2_mean'], '.3f'):>9}"
                     f"{fmt(surface.get('changed_fraction'), '.3f'):>13}{fmt(surface.get('jaccard_mean'), '.3f'):>9}")
    print(f"-> {out}/report.json, robustness.png, config.yaml", file=sys.stderr)
    return "\n".join(lines)
