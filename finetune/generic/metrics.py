"""Metrics of the generic recipes: classification (single- and multi-label) and entity-level tagging scores.

Classification: accuracy (exact match of the whole label set for multi-label), micro- and macro-averaged precision,
recall and F1, and per-label scores. Single-label predictions are the argmax; multi-label ones every label whose
probability reaches the threshold. Macro averages run over the labels that occur in the gold or the predictions: a
label with neither has no defined F1 (sklearn would count it as 0 and lower the average for a label the split just
lacks).

Tagging: entities are the maximal IOB2 chunks, read as conlleval and seqeval's default mode read them (a chunk ends
at O, at B-, or at a tag of another type; an I- that continues nothing starts a chunk), and one counts as correct
when type, first and last word all match. Precision, recall and F1 per type and micro-averaged over all entities
(seqeval's "micro avg", the CoNLL number), the macro average over types, and word-level tag accuracy. The tests check
these against the `seqeval` package.

Model selection (the validation score that keeps the best epoch and drives early stopping): macro-F1 for
single-label classification (accuracy would reward predicting the majority class of a skewed clinical label),
micro-F1 for multi-label, entity micro-F1 for tagging.
"""

from __future__ import annotations

from collections import Counter

import numpy as np


def selection_metric(task: str, multi_label: bool) -> str:
    if task == "tokens":
        return "f1"
    return "f1_micro" if multi_label else "f1_macro"


def _prf(tp: float, n_pred: float, n_gold: float) -> tuple[float, float, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0
    return precision, recall, f1


def _scores(tp: np.ndarray, n_pred: np.ndarray, n_gold: np.ndarray, names: list[str]) -> dict:
    """Micro, macro (labels with gold or predictions) and per-label precision / recall / F1 from per-label counts."""
    precision, recall, f1 = _prf(float(tp.sum()), float(n_pred.sum()), float(n_gold.sum()))
    per_label, defined = {}, []
    for i, name in enumerate(names):
        p, r, f = _prf(float(tp[i]), float(n_pred[i]), float(n_gold[i]))
        per_label[name] = {"precision": p, "recall": r, "f1": f, "support": int(n_gold[i])}
        if n_pred[i] + n_gold[i]:
            defined.append((p, r, f))
    macro = np.mean(defined, axis=0) if defined else np.zeros(3)
    return {"precision_micro": precision, "recall_micro": recall, "f1_micro": f1,
            "precision_macro": float(macro[0]), "recall_macro": float(macro[1]), "f1_macro": float(macro[2]),
            "per_label": per_label}


def classification_metrics(gold: list[list[int]], scores: np.ndarray, labels: list[str], multi_label: bool,
                           threshold: float = 0.5) -> dict:
    """`gold`: label ids per text; `scores`: [n, n_labels] probabilities (softmax or sigmoid)."""
    n, n_labels = scores.shape
    Y = np.zeros((n, n_labels), dtype=bool)
    for row, ids in enumerate(gold):
        Y[row, ids] = True
    if multi_label:
        P = scores >= threshold
    else:
        P = np.zeros_like(Y)
        P[np.arange(n), scores.argmax(1)] = True
    tp = (Y & P).sum(0)
    out = {"accuracy": float((Y == P).all(1).mean()) if n else 0.0, "examples": n}
    return {**out, **_scores(tp, P.sum(0), Y.sum(0), labels)}


def entity_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word + 1) of each IOB2 chunk (see the module docstring for the reading)."""
    spans, start, kind = [], None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, name = tag.partition("-")
        if start is not None and (prefix != "I" or name != kind):
            spans.append((kind, start, i))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = i, name
    return spans


def entity_metrics(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Entity-level scores of predicted tag sequences against gold ones (one list of word tags per text)."""
    if len(gold) != len(predicted) or any(len(g) != len(p) for g, p in zip(gold, predicted, strict=True)):
        raise ValueError("gold and predicted must hold the same number of texts and of tags per text")
    n_gold, n_pred, tp = Counter(), Counter(), Counter()
    words = correct_words = 0
    for g, p in zip(gold, predicted, strict=True):
        gold_spans, pred_spans = set(entity_spans(g)), set(entity_spans(p))
        n_gold.update(s[0] for s in gold_spans)
        n_pred.update(s[0] for s in pred_spans)
        tp.update(s[0] for s in gold_spans & pred_spans)
        words += len(g)
        correct_words += sum(a == b for a, b in zip(g, p, strict=True))
    types = sorted(set(n_gold) | set(n_pred))
    counts = [np.array([c[t] for t in types], dtype=float) for c in (tp, n_pred, n_gold)]
    scores = _scores(*counts, types)
    return {"precision": scores["precision_micro"], "recall": scores["recall_micro"], "f1": scores["f1_micro"],
            "f1_macro": scores["f1_macro"], "word_accuracy": correct_words / words if words else 0.0,
            "entities": int(sum(n_gold.values())), "examples": len(gold), "per_type": scores["per_label"]}
