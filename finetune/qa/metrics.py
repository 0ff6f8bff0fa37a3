"""SQuAD v2.0 scores, with the official `evaluate-v2.0.py` semantics (Rajpurkar et al. 2018), so numbers compare with
published SQuAD v2 / RadQA results.

- `normalize_answer`: lower case, punctuation (`string.punctuation`) removed, the articles a / an / the removed as
  whole words, whitespace collapsed; in that order, as the official script does.
- exact match: the normalized strings are equal. Token F1: over the normalized whitespace tokens (a bag: repeated
  tokens count as often as both sides have them); both empty scores 1, exactly one empty scores 0.
- a question scores its best over the gold answers; gold answers that normalize to "" are dropped, and a question
  with none left (an unanswerable one) has the single gold answer "", so only an empty prediction scores 1.
- a no-answer threshold: with per-question no-answer scores (`na_probs`: the official script's probabilities, or our
  null-score minus best-span-score differences), a question whose score is above the threshold is predicted "".
  `best_exact` / `best_f1` are the scores at the best such threshold (`best_*_thresh`), searched over the
  questions' own scores exactly as the official `find_best_thresh` does.

Scores are percentages (0-100) under the official keys: exact, f1, total, HasAns_exact, HasAns_f1, HasAns_total,
NoAns_exact, NoAns_f1, NoAns_total, best_exact, best_exact_thresh, best_f1, best_f1_thresh.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (the official order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def exact_match(gold: str, predicted: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(predicted))


def token_f1(gold: str, predicted: str) -> float:
    gold_tokens, predicted_tokens = answer_tokens(gold), answer_tokens(predicted)
    if not gold_tokens or not predicted_tokens:
        return float(gold_tokens == predicted_tokens)  # both empty: 1 (a correct "no answer"); one empty: 0
    same = sum((collections.Counter(gold_tokens) & collections.Counter(predicted_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answers: Sequence[str]) -> list[str]:
    """The golds a question is scored against: those that normalize to something, else [""] (unanswerable)."""
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def raw_scores(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> tuple[dict, dict]:
    """Per question id, the best exact match and F1 over its gold answers (no threshold applied). Every gold id must
    have a prediction (a missing one would silently lower the score)."""
    missing = [qid for qid in golds if qid not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} questions have no prediction (e.g. id {missing[0]!r})")
    exact, f1 = {}, {}
    for qid, answers in golds.items():
        answers = gold_answers(answers)
        exact[qid] = max(exact_match(a, predictions[qid]) for a in answers)
        f1[qid] = max(token_f1(a, predictions[qid]) for a in answers)
    return exact, f1


def apply_no_answer_threshold(scores: Mapping[str, float], na_probs: Mapping[str, float],
                              has_answer: Mapping[str, bool], threshold: float) -> dict:
    """A question whose no-answer score is above `threshold` is predicted "": it scores 1 if unanswerable, else 0."""
    return {qid: float(not has_answer[qid]) if na_probs[qid] > threshold else s for qid, s in scores.items()}


def find_best_threshold(predictions: Mapping[str, str], scores: Mapping[str, float], na_probs: Mapping[str, float],
                        has_answer: Mapping[str, bool], initial: float = 0.0) -> tuple[float, float]:
    """(best score in %, its threshold): the official search. It starts from "every question predicted empty" (the
    no-answer share) and lowers the bar question by question in increasing no-answer score; `initial` is the
    threshold reported when nothing beats all-empty (the official 0.0, right for probabilities; pass a value below
    every score when the scores are logit differences, which can be negative)."""
    current = best = sum(1 for qid in scores if not has_answer[qid])
    threshold = initial
    for qid in sorted(na_probs, key=lambda q: na_probs[q]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            current += scores[qid]
        elif predictions[qid]:
            current -= 1
        if current > best:
            best, threshold = current, na_probs[qid]
    return 100.0 * best / max(len(scores), 1), threshold


def squad_v2_scores(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
                    na_probs: Mapping[str, float] | None = None, threshold: float = 1.0,
                    initial_threshold: float = 0.0) -> dict:
    """The official evaluation: `golds` id -> gold answer texts ([] when unanswerable), `predictions` id -> text,
    optional `na_probs` id -> no-answer score (default 0 for every question, as the official script without a
    na-prob file) and the `threshold` above which a question is predicted "" (official default 1.0)."""
    na_probs = dict(na_probs) if na_probs is not None else {qid: 0.0 for qid in predictions}
    has_answer = {qid: bool(answers) for qid, answers in golds.items()}  # the official qid_to_has_ans
    exact_raw, f1_raw = raw_scores(golds, predictions)
    exact = apply_no_answer_threshold(exact_raw, na_probs, has_answer, threshold)
    f1 = apply_no_answer_threshold(f1_raw, na_probs, has_answer, threshold)
    out = _summary(exact, f1, list(golds))
    for name, wanted in (("HasAns", True), ("NoAns", False)):
        ids = [q for q in golds if has_answer[q] == wanted]
        if ids:
            out.update({f"{name}_{k}": v for k, v in _summary(exact, f1, ids).items()})
    best_exact, exact_thresh = find_best_threshold(predictions, exact_raw, na_probs, has_answer, initial_threshold)
    best_f1, f1_thresh = find_best_threshold(predictions, f1_raw, na_probs, has_answer, initial_threshold)
    out.update(best_exact=best_exact, best_exact_thresh=exact_thresh, best_f1=best_f1, best_f1_thresh=f1_thresh)
    return out


def _summary(exact: Mapping[str, float], f1: Mapping[str, float], ids: list[str]) -> dict:
    n = len(ids)
    return {"exact": 100.0 * sum(exact[q] for q in ids) / max(n, 1), "f1": 100.0 * sum(f1[q] for q in ids) / max(n, 1),
            "total": n}
