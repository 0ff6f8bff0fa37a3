"""From start / end logits of every window to one answer per question (transformers' `postprocess_qa_predictions`
with version_2_with_negative, computed exactly rather than from the top-20 starts and ends).

- A span is a start and an end token of the same window, both inside its context piece (never the question, [CLS]
  or [SEP]), start <= end, at most `max_answer_tokens` long; its score is start logit + end logit. The question's
  best span is the best over all its windows (a span seen in two overlapping windows keeps its better score).
- The null score is [CLS]'s start + end logit, the minimum over the question's windows (the window most sure
  the answer is somewhere in it decides, as in transformers).
- `score_diff` = null score - best span score: the answer is "" when it is above the threshold (unanswerable
  questions allowed), else the best span's text, the exact substring of the context from the offsets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cmbert.finetune.qa.data import QaExample
from cmbert.finetune.qa.windows import Windows


@dataclass
class Span:
    start: int  # characters of the context, end exclusive
    end: int
    score: float  # start logit + end logit


@dataclass
class QuestionPrediction:
    id: str
    best: Span | None  # None only when no window has a context token (never for a non-empty context)
    null_score: float
    n_best: list[Span] = field(default_factory=list)

    @property
    def score_diff(self) -> float:
        """Null score minus best span score: the higher, the surer the model is there is no answer."""
        return self.null_score - self.best.score if self.best is not None else float("inf")

    def answer(self, context: str, threshold: float | None) -> str:
        """The predicted text: "" when `threshold` is given and score_diff is above it, else the best span."""
        if self.best is None or (threshold is not None and self.score_diff > threshold):
            return ""
        return context[self.best.start : self.best.end]


def window_spans(start_logits: np.ndarray, end_logits: np.ndarray, max_answer_tokens: int,
                 top: int) -> list[tuple[float, int, int]]:
    """The `top` best (score, first token, last token) spans of one context piece's logits (token indices within
    the piece)."""
    n = len(start_logits)
    length = min(max_answer_tokens, n)
    # scores[k, i]: the span from token i to token i + k; -inf where it would run past the piece.
    scores = np.full((length, n), -np.inf)
    for k in range(length):
        scores[k, : n - k] = start_logits[: n - k] + end_logits[k:]
    flat = scores.ravel()
    top = min(top, n * length)
    chosen = np.argpartition(-flat, top - 1)[:top] if top < flat.size else np.arange(flat.size)
    out = []
    for j in chosen:
        if np.isfinite(flat[j]):
            k, i = divmod(int(j), n)
            out.append((float(flat[j]), i, i + k))
    return sorted(out, reverse=True)


def predict_answers(examples: list[QaExample], windows: Windows, start_logits: list[np.ndarray],
                    end_logits: list[np.ndarray], max_answer_tokens: int, n_best: int = 20) -> list[QuestionPrediction]:
    """One prediction per example, from the logits of every window ([window length] arrays, in window order)."""
    spans: list[dict[tuple[int, int], float]] = [{} for _ in examples]
    nulls = [np.inf] * len(examples)
    for w, index in enumerate(windows.example):
        s, e = start_logits[w], end_logits[w]
        nulls[index] = min(nulls[index], float(s[0] + e[0]))
        first, count = windows.context_start[w], windows.n_context[w]
        offsets = windows.offsets[index][windows.token_start[w] : windows.token_start[w] + count]
        for score, i, j in window_spans(s[first : first + count], e[first : first + count], max_answer_tokens, n_best):
            key = (int(offsets[i, 0]), int(offsets[j, 1]))
            if score > spans[index].get(key, -np.inf):
                spans[index][key] = score
    out = []
    for example, found, null in zip(examples, spans, nulls, strict=True):
        ranked = sorted((Span(a, b, score) for (a, b), score in found.items()), key=lambda x: -x.score)[:n_best]
        out.append(QuestionPrediction(example.id, ranked[0] if ranked else None, null, ranked))
    return out


def span_probabilities(spans: list[Span]) -> list[float]:
    """A softmax over the n-best scores (transformers' `probability` field): relative, not calibrated."""
    if not spans:
        return []
    scores = np.array([s.score for s in spans])
    weights = np.exp(scores - scores.max())
    return (weights / weights.sum()).tolist()
