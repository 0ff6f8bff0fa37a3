"""Evidence terms: the n-grams that mark each code in the training notes (finetune/icd/terms.py)."""

from __future__ import annotations

import numpy as np

import cmbert.finetune.icd.terms as terms_module
from cmbert.core.notes import TokenizedNotes
from cmbert.finetune.icd.terms import MIN_DF, evidence_terms


def tokenized(notes: list[np.ndarray]) -> TokenizedNotes:
    offsets = np.zeros(len(notes) + 1, dtype=np.int64)
    np.cumsum([len(n) for n in notes], out=offsets[1:])
    lengths = np.diff(offsets)
    return TokenizedNotes(np.concatenate(notes).astype(np.int32), offsets, lengths)


def corpus(n=300, seed=0):
    """Code 0 is written as the bigram (7, 8) in 2/3 of its notes and as token 9 in the rest; code 1 has token 5
    in every note of it but also in as many notes without it (imprecise); code 2 has no positive note; a one-off
    token 6 marks two notes of code 0 only (below MIN_DF)."""
    rng = np.random.default_rng(seed)
    notes, Y = [], np.zeros((n, 3), dtype=bool)
    for i in range(n):
        x = rng.integers(20, 200, 60)
        Y[i, 0] = rng.random() < 0.3
        Y[i, 1] = rng.random() < 0.3
        if Y[i, 0]:
            x[10:12] = (7, 8) if rng.random() < 2 / 3 else (9, 9)
            if i < 40 and Y[:i, 0].sum() < 2:
                x[30] = 6
        if Y[i, 1] or rng.random() < 0.45:
            x[40] = 5
        notes.append(x)
    return tokenized(notes), Y


def test_greedy_terms_cover_each_surface_form_once():
    notes, Y = corpus()
    terms = evidence_terms(notes, Y, per_label=3)
    form_a, form_b = ([7], [8], [7, 8]), ([9], [9, 9])  # ties between a bigram and its words go either way
    assert terms[0][0] in form_a  # the commoner surface form first
    assert terms[0][1] in form_b  # then the one of the notes it left uncovered
    assert not any(t in form_a + form_b for t in terms[0][2:])  # never the same notes' words again
    assert terms[1] == []  # token 5 is in as many negatives as positives: below MIN_PRECISION
    assert terms[2] == []  # no positive note
    assert all(6 not in t for ts in terms for t in ts)  # in fewer than MIN_DF notes
    assert MIN_DF > 2


def test_terms_per_label_limit_and_sampling(monkeypatch):
    notes, Y = corpus(seed=1)
    assert [len(t) for t in evidence_terms(notes, Y, per_label=1)] == [1, 0, 0]
    assert evidence_terms(notes, Y, per_label=0) == [[], [], []]
    monkeypatch.setattr(terms_module, "MAX_NOTES", 200)  # a seeded sample of the notes, still finding code 0's form
    sampled = evidence_terms(notes, Y, per_label=1, seed=3)
    assert sampled == evidence_terms(notes, Y, per_label=1, seed=3) and sampled[0][0] in ([7], [8], [7, 8])
