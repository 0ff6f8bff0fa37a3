"""Evidence terms: the token n-grams that mark each code in the training notes, to start extra label queries on.

Why: one query per label (PLM-ICD) attends to the tokens that already resemble it. A surface form it does not
resemble gets almost no attention, so almost no gradient, and is never learned. On the 1,500-patient synthetic set the
title-initialised query of J44.9 ("Chronic obstructive pulmonary disease, unspecified") attended to "Chronic
obstructive pulmonary" and "Salmeterol" but never to "COPD" or "emphysema": notes that only say those scored 0.003
(BENCHMARKS.md). The same held for "current smoker" (F17.210) and "s/p CABG" (Z95.1), while TF-IDF got all three
right. With `model.queries_per_label` = K > 1 each label has K queries whose attended vectors add up in its logit
(`LabelAttention`); query 0 starts on the code's title, queries 1..K-1 on the terms found here, so every common way a
note names a code has a query from step 0.

How: a binary note x term matrix of token n-grams (ids, never text; at most `MAX_NOTES` training notes). For each
code, greedily: the term that best detects the code (F1 of "the note contains the term") on the positive notes no
chosen term covers yet; stop at K-1 terms, or when no term is precise enough or covers enough notes. A term must
occur in at least `MIN_DF` notes, so nothing that identifies one note (a name that escaped de-identification) becomes
a query. Terms are not stored anywhere: they only set the queries' starting values.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from cmbert.core.notes import TokenizedNotes

NGRAM_MAX = 3  # "s/p CABG", "current smoker": a few BPE tokens
MIN_DF = 5  # notes a term must occur in
# "Contains the term" as a detector of the code, over all notes: the lower end of the 95 % Wilson interval of its
# precision must clear this, so a term seen in 5 notes, 3 of them the code's, is chance, not evidence.
MIN_PRECISION = 0.5
MIN_NEW = 3  # positive notes a further term must cover that earlier terms did not
MAX_NOTES = 20_000  # a seeded sample bounds time and memory on MIMIC-IV (~90k training notes)


def _ngram_keys(ids: np.ndarray, base: int) -> np.ndarray:
    """Distinct n-grams (n = 1..NGRAM_MAX) of one note, each as one int64: sum of (id + 1) * base^position."""
    ids = ids.astype(np.int64) + 1
    keys, current = [], ids
    for n in range(1, NGRAM_MAX + 1):
        if n > 1:
            current = current[:-1] * base + ids[n - 1:]
        keys.append(current)
    return np.unique(np.concatenate(keys))


def _decode(key: int, base: int) -> list[int]:
    out = []
    while key:
        key, digit = divmod(key, base)
        out.append(digit - 1)
    return out[::-1]


def _wilson_lower(hits: np.ndarray, n: np.ndarray, z: float = 1.96) -> np.ndarray:
    p = hits / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def evidence_terms(notes: TokenizedNotes, Y: np.ndarray, per_label: int, seed: int = 0) -> list[list[list[int]]]:
    """Up to `per_label` token-id n-grams per code (columns of Y, bool [n_notes, n_codes]), best first."""
    if per_label < 1 or len(notes) == 0:
        return [[] for _ in range(Y.shape[1])]
    rows = np.arange(len(notes))
    if len(rows) > MAX_NOTES:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_NOTES, replace=False))
    base = int(notes.ids.max(initial=0)) + 2
    if base ** NGRAM_MAX >= 2**63:
        raise ValueError(f"vocabulary of {base - 1} tokens too large for {NGRAM_MAX}-grams packed in int64")
    per_note = [_ngram_keys(notes.note(i), base) for i in rows]
    keys, cols = np.unique(np.concatenate(per_note), return_inverse=True)
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(k) for k in per_note], out=indptr[1:])
    X = sp.csr_matrix((np.ones(len(cols), dtype=np.int8), cols, indptr), shape=(len(rows), len(keys)))
    df = np.bincount(cols, minlength=len(keys))
    common = df >= MIN_DF  # rare terms can neither be chosen nor identify anyone
    X, keys, df = X[:, common].tocsr(), keys[common], df[common]
    Y = Y[rows]
    out = []
    for label in range(Y.shape[1]):
        positives = X[np.flatnonzero(Y[:, label])]
        terms: list[list[int]] = []
        if positives.shape[0] >= MIN_NEW:
            cand, tp = np.unique(positives.indices, return_counts=True)  # each row's columns are distinct
            precise = _wilson_lower(tp, df[cand]) >= MIN_PRECISION
            cand, fp = cand[precise], (df[cand] - tp)[precise]  # false positives count over every note
            remaining = np.ones(positives.shape[0], dtype=bool)
            while len(terms) < per_label and len(cand):
                new = np.asarray(positives[remaining][:, cand].sum(0)).ravel()
                # F1 on the positives still uncovered
                f1 = 2 * new / np.maximum(2 * new + fp + (remaining.sum() - new), 1)
                best = int(np.argmax(np.where(new >= MIN_NEW, f1, -1)))
                if new[best] < MIN_NEW:
                    break
                terms.append(_decode(int(keys[cand[best]]), base))
                remaining &= positives[:, cand[best]].toarray().ravel() == 0
                cand, fp = np.delete(cand, best), np.delete(fp, best)
        out.append(terms)
    return out
