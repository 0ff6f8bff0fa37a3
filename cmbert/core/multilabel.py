"""ICD-coding metrics as Edin et al. 2023 compute them (JoakimEdin/medical-coding-reproducibility, `src/metrics.py`,
`src/utils/decision_boundary.py`), vectorised over numpy arrays: y_true bool [N, L], scores float [N, L].

Evaluation set (Edin's `MetricCollection` with the split's code indices): every metric except AUC uses only the codes
with at least one positive in y_true and only the documents with at least one positive. A prediction is
`score > threshold` (strict, as Edin), compared in float64. Values are fractions; 0/0 counts 0 where Edin adds 1e-10.
- f1_micro: 2TP / (2TP + FP + FN) over all (document, code) cells of the evaluation set.
- f1_macro: the mean of per-code tp / (tp + 0.5 (fp + fn)) (Edin's corrected macro-F1, not F1 of macro-P and macro-R).
  Every evaluated code has a positive, so the per-code F1 is always defined.
- precision_micro / recall_micro: TP / (TP + FP), TP / (TP + FN).
- precision_macro / recall_macro: the mean of per-code tp / (tp + fp) (0 for a code never predicted), tp / (tp + fn).
- auc_micro: ROC AUC of all cells pooled; auc_macro: the mean per-code ROC AUC over codes with both classes. Both on
  the full matrix: Edin's test-time code path recomputes AUC on the unfiltered logits, and `roc_curve` skips a code
  without positives (no positive) or without negatives (NaN FPR). Tied scores count one half (Mann-Whitney).
- precision_at_k (k = 5, 8, 15): the mean over documents of (positives among the k best-scored codes) / k.
- recall_at_k (k = 10, 15): the mean over documents of (positives among the k best-scored codes) / (positives).
- r_precision: Edin's `PrecisionAtRecall`, the mean of (positives among the R best-scored codes) / R, R = positives.
- map: Edin's `MeanAveragePrecision`, a per-document ranking AP (sort a document's codes by score, average the
  precision at each positive's rank), averaged over documents. Equal to sklearn's label_ranking_average_precision_score.
- exact_match: the fraction of documents whose predicted code set equals the true set (over the evaluated codes).
Ties in a ranking (Edin's torch.sort leaves them to chance) are broken against the system: at a cut-off (P@k, R@k,
R-precision) tied negatives rank first; in AP a positive gets the precision at the end of its tie group (sklearn).

- tune_threshold: Edin's `f1_score_db_tuning`: one global threshold from np.linspace(0, 1, 100) maximising micro-F1
  over the full matrix (all documents, all codes); ties go to the smallest threshold. `threshold_counts` and
  `best_threshold` are its two halves, for data split over sites (the counts add up).
- per_code_metrics: per-code F1 / precision / recall / AP on the evaluated documents; frequent vs rare split at the
  median training count of the evaluated codes (rare: train count <= cut-off), as Edin plot F1 against frequency.
- paired_bootstrap: resamples the evaluated documents (the same indices for both systems); p is two-sided.
- mcnemar: discordant (document, code) decisions; exact binomial below 25 discordant cells, else chi-square with
  continuity correction. Pass it `scores > threshold` to match the other metrics.
Cost: memory is the inputs plus blocks of 4M cells; time is a few passes over N x L plus sorts of the cells that score
at least as high as some positive of their document / code (about 6 s for 20k x 8k with a model that ranks well).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

METRIC_NAMES: tuple[str, ...] = (
    "f1_micro", "f1_macro", "precision_micro", "recall_micro", "precision_macro", "recall_macro", "auc_micro",
    "auc_macro", "precision_at_5", "precision_at_8", "precision_at_15", "recall_at_10", "recall_at_15",
    "r_precision", "map", "exact_match",
)
THRESHOLD_GRID = np.linspace(0, 1, 100)  # Edin's decision-boundary grid (torch.linspace in float32 there)
_TOP_K = (5, 8, 10, 15)
_RANKING = {"precision_at_5", "precision_at_8", "precision_at_15", "recall_at_10", "recall_at_15", "r_precision", "map"}
# Metrics that are sums over documents: the bootstrap resamples per-document counts instead of recomputing.
_PER_DOCUMENT = _RANKING | {"f1_micro", "precision_micro", "recall_micro", "exact_match"}
_BLOCK_CELLS = 1 << 22  # cells per block: a few 16 MB temporaries at a time, whatever N x L is
_BUCKET_BITS = 20  # histogram resolution of the exact pooled-rank counter (2**20 buckets, 8 MB)
_EXACT_BELOW = 25  # McNemar: exact binomial test below this many discordant cells


# ------------------------------------------------------------------------------------------------------ plumbing


def _prepare(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    y = y if y.dtype == bool else y.astype(bool)
    s = np.asarray(scores)
    s = s if np.issubdtype(s.dtype, np.floating) else s.astype(np.float64)
    if y.ndim != 2 or s.shape != y.shape:
        raise ValueError(f"y_true and scores must be 2-D of the same shape, got {y.shape} and {s.shape}")
    return y, s


def _key_mode(s: np.ndarray) -> str:
    """How to turn scores into integer sort keys (see `_rank_keys`); also rejects NaN."""
    if s.size == 0:
        return "f32"
    lo, hi = float(s.min()), float(s.max())
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError("scores contain NaN")
    inside = lo >= 0 and hi < 2  # probabilities: the float bit patterns fit with a spare bit for the label
    if inside and s.dtype == np.float64:
        return "f64"
    return "f32" if inside and s.dtype.itemsize <= 4 else "wide"


def _rank_keys(s: np.ndarray, y: np.ndarray, mode: str) -> np.ndarray:
    """Integer keys whose ascending order is score ascending and, among equal scores, positives first. Read backwards
    that is a ranking by descending score with tied negatives first, i.e. ties broken against the system. The key is
    the float's bit pattern (monotone for non-negative floats) shifted left once, with `not label` in the free bit:
    one integer sort gives both the order and the labels in that order, no argsort and gather.
    "wide" (negative scores or >= 2, e.g. logits) uses order-preserving int64 keys of the float32-rounded score, which
    is exact for float32 input and may tie float64 scores that differ below float32 precision."""
    if mode == "f64":
        keys = np.array(s, dtype=np.float64, order="C")
        keys += 0.0  # folds -0.0 into 0.0: equal scores must get equal keys
        keys = keys.view(np.int64)
    else:
        f = np.array(s, dtype=np.float32, order="C")
        f += np.float32(0)
        keys = f.view(np.int32)
        if mode == "wide":
            keys ^= (keys >> 31) & 0x7FFFFFFF  # negative floats: reverse the magnitude order
            keys = keys.astype(np.int64)
    keys <<= 1
    keys |= ~y
    return keys


def _rank_positives(s: np.ndarray, y: np.ndarray, axis: int, mode: str) -> tuple[np.ndarray, ...]:
    """Rank the codes of each document (axis=1) or the documents of each code (axis=0) by descending score, tied
    negatives first, and return for every positive (group-major, best rank first): its group, its 0-based rank, the
    precision at the end of its tie group (its AP term) and the negatives ranked below it with tied negatives counting
    one half (its Mann-Whitney U term); plus the positives per group.
    Only cells scored at least as high as their group's lowest positive can rank above or tie with a positive; the
    rest are negatives below all of them and are only counted. When those candidates are few (a system that ranks
    well) only they are sorted, in one 1-D sort of (group, key) packed into an int64; when they are most of the block
    (an untrained system) a row-wise sort of all keys is cheaper."""
    n_groups, n_items = (s.shape[1], s.shape[0]) if axis == 0 else s.shape
    lowest = np.min(s, axis=axis, where=y, initial=np.inf)
    candidate = s >= np.expand_dims(lowest, axis)
    if 4 * np.count_nonzero(candidate) > candidate.size:
        keys = _rank_keys(s.T, y.T, mode) if axis == 0 else _rank_keys(s, y, mode)
        keys.sort(axis=1)
        row, key = np.repeat(np.arange(n_groups), n_items), keys[:, ::-1].ravel()
    else:
        i, j = np.nonzero(candidate)
        group, keys = (j if axis == 0 else i), _rank_keys(s[i, j], y[i, j], mode)
        if mode == "f64":  # 63-bit keys leave no room for the group: sort the pairs lexicographically
            order = np.lexsort((-keys, group))
            row, key = group[order], keys[order]
        else:  # keys fit in 33 signed bits: the group in the high bits, the complemented key (descending) below
            packed = (group.astype(np.int64) << 34) | ((1 << 33) - 1 - keys.astype(np.int64))
            packed.sort()
            row, key = packed >> 34, (1 << 33) - 1 - (packed & ((1 << 34) - 1))
    r, n = n_groups, n_items  # from here `row` is the group (document or code) of each sorted item
    kept = np.bincount(row, minlength=r)
    row_start = np.cumsum(kept) - kept
    pos = np.flatnonzero((key & 1) == 0)  # flat positions of the positives, grouped by row, best first
    prow = row[pos]
    rank = pos - row_start[prow]
    n_pos = np.bincount(prow, minlength=r)
    first = np.cumsum(n_pos) - n_pos  # index of each row's first positive in pos
    k = np.arange(pos.size) - first[prow]  # this positive is the (k+1)-th of its row
    score = key >> 1
    tied = (score[1:] == score[:-1]) & (row[1:] == row[:-1])  # flat item j and j+1 share a row and a score
    if tied.any():
        is_end = np.ones(key.size, dtype=bool)
        is_end[:-1] = ~tied
        ends = np.flatnonzero(is_end)
        end_flat = ends[np.searchsorted(ends, pos)]
        is_start = np.ones(key.size, dtype=bool)
        is_start[1:] = ~tied
        starts = np.flatnonzero(is_start)
        start_flat = starts[np.searchsorted(starts, pos, side="right") - 1]
        pos_to_end = np.searchsorted(pos, end_flat, side="right") - first[prow]
        pos_before_start = np.searchsorted(pos, start_flat) - first[prow]
        end, start = end_flat - row_start[prow], start_flat - row_start[prow]
    else:
        end = start = rank
        pos_to_end, pos_before_start = k + 1, k
    precision = pos_to_end / (end + 1)
    neg_to_end = end + 1 - pos_to_end
    neg_tied = neg_to_end - (start - pos_before_start)
    u = (n - n_pos)[prow] - neg_to_end + 0.5 * neg_tied
    return prow, rank, n_pos, precision, u


def _div(num, den, empty: float = 0.0):
    """num / den with `empty` where den == 0 (Edin's 1e-10 epsilon gives 0 there)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, empty)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


@dataclass(frozen=True)
class _EvalSet:
    """Edin's evaluation set: documents and codes with at least one positive (None: all of them)."""

    rows: np.ndarray | None
    codes: np.ndarray | None


def _eval_set(y: np.ndarray) -> _EvalSet:
    docs, codes = y.any(axis=1), y.any(axis=0)
    return _EvalSet(None if docs.all() else np.flatnonzero(docs), None if codes.all() else np.flatnonzero(codes))


def _row_blocks(n_rows: int, rows: np.ndarray | None, n_cols: int) -> Iterator[slice | np.ndarray]:
    step = max(1, _BLOCK_CELLS // max(n_cols, 1))
    if rows is None:
        for r0 in range(0, n_rows, step):
            yield slice(r0, min(n_rows, r0 + step))
    else:
        for r0 in range(0, len(rows), step):
            yield rows[r0:r0 + step]


def _take(a: np.ndarray, rows: slice | np.ndarray, codes: np.ndarray | None) -> np.ndarray:
    block = a[rows]
    return block if codes is None else block[:, codes]


# -------------------------------------------------------------------------------------- per-document statistics


@dataclass
class _Documents:
    """Counts per evaluated document (over the evaluated codes) and per evaluated code."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    n_pos: np.ndarray
    code_tp: np.ndarray
    code_fp: np.ndarray
    code_fn: np.ndarray
    top: dict[int, np.ndarray] = field(default_factory=dict)  # positives among the k best-ranked codes
    top_r: np.ndarray | None = None  # positives among the R best-ranked codes, R = positives
    ap: np.ndarray | None = None  # ranking average precision


def _document_stats(y: np.ndarray, s: np.ndarray, threshold: float, ev: _EvalSet, mode: str,
                    ranking: bool) -> _Documents:
    """One pass over blocks of evaluated documents: threshold counts, and (ranking) one integer sort per block."""
    t = np.float64(threshold)  # a numpy float64 scalar makes the comparison float64 for float32 scores too
    n_codes = y.shape[1] if ev.codes is None else len(ev.codes)
    code_tp, code_pred, code_pos = (np.zeros(n_codes, dtype=np.int64) for _ in range(3))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("tp", "pred", "pos", "top_r", "ap", *map(str, _TOP_K))}
    for rows in _row_blocks(y.shape[0], ev.rows, n_codes):
        yb, sb = _take(y, rows, ev.codes), _take(s, rows, ev.codes)
        pred = sb > t
        hit = pred & yb
        code_tp += hit.sum(axis=0)
        code_pred += pred.sum(axis=0)
        code_pos += yb.sum(axis=0)
        parts["tp"].append(hit.sum(axis=1))
        parts["pred"].append(pred.sum(axis=1))
        parts["pos"].append(yb.sum(axis=1))
        if not ranking:
            continue
        r = yb.shape[0]
        row, col, n_pos, precision, _ = _rank_positives(sb, yb, 1, mode)
        for k in _TOP_K:
            parts[str(k)].append(np.bincount(row[col < k], minlength=r))
        parts["top_r"].append(np.bincount(row[col < n_pos[row]], minlength=r))
        parts["ap"].append(_div(np.bincount(row, weights=precision, minlength=r), n_pos, np.nan))

    def cat(name: str, dtype=np.int64) -> np.ndarray:
        return np.concatenate(parts[name]) if parts[name] else np.zeros(0, dtype=dtype)

    tp, pred, pos = cat("tp"), cat("pred"), cat("pos")
    docs = _Documents(tp=tp, fp=pred - tp, fn=pos - tp, n_pos=pos, code_tp=code_tp, code_fp=code_pred - code_tp,
                      code_fn=code_pos - code_tp)
    if ranking:
        docs.top = {k: cat(str(k)) for k in _TOP_K}
        docs.top_r, docs.ap = cat("top_r"), cat("ap", np.float64)
    return docs


def _document_metric(docs: _Documents, name: str, idx: np.ndarray | None = None) -> np.ndarray:
    """A per-document metric on all evaluated documents (idx None) or on resamples idx [B, n] (one value each)."""
    n = len(docs.tp) if idx is None else idx.shape[1]

    def total(v: np.ndarray) -> np.ndarray:
        return np.asarray(v.sum(dtype=np.float64)) if idx is None else v[idx].sum(axis=1, dtype=np.float64)

    if name in ("f1_micro", "precision_micro", "recall_micro"):
        tp, fp, fn = total(docs.tp), total(docs.fp), total(docs.fn)
        den = {"f1_micro": tp + 0.5 * (fp + fn), "precision_micro": tp + fp, "recall_micro": tp + fn}[name]
        return _div(tp, den)
    if name == "exact_match":
        per_doc = (docs.fp == 0) & (docs.fn == 0)
    elif name.startswith("precision_at_"):
        k = int(name.rsplit("_", 1)[1])
        per_doc = docs.top[k] / k
    elif name.startswith("recall_at_"):
        per_doc = _div(docs.top[int(name.rsplit("_", 1)[1])], docs.n_pos)
    elif name == "r_precision":
        per_doc = _div(docs.top_r, docs.n_pos)
    elif name == "map":
        per_doc = docs.ap
    else:
        raise ValueError(f"{name} is not a per-document metric")
    return total(per_doc) / n if n else np.asarray(np.nan)


# --------------------------------------------------------------------------------------------- AUC, thresholds


def _buckets(values: np.ndarray) -> np.ndarray:
    """A monotone (non-decreasing) map of values to 2**20 buckets: the top bits of the value's float32 bit pattern,
    which orders non-negative floats. Negative values (and -0.0) all fall in bucket 0 with 0.0, which keeps the map
    monotone: they are then settled exactly by `_below_and_equal`, only slower. Equal values share a bucket, and a
    value in a lower bucket is strictly smaller."""
    bits = np.asarray(values, dtype=np.float32).view(np.int32)
    b = np.maximum(bits, 0)
    b >>= 31 - _BUCKET_BITS
    return b


def _below_and_equal(queries: np.ndarray, pools: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """For each query, how many pool values are strictly below it and how many equal it, exactly, in one pass and
    without sorting the pool: a bucket histogram settles every value outside the queries' buckets; only the values
    that share a bucket with some query are kept, sorted and searched. Comparisons are in the wider dtype."""
    queries = np.asarray(queries)
    n_buckets = 1 << _BUCKET_BITS
    q_bucket = _buckets(queries)
    wanted = np.zeros(n_buckets, dtype=bool)
    wanted[q_bucket] = True
    hist = np.zeros(n_buckets, dtype=np.int64)
    left = np.zeros(len(queries), dtype=np.int64)  # kept values < query, summed over blocks
    right = np.zeros(len(queries), dtype=np.int64)  # kept values <= query
    for pool in pools:
        b = _buckets(pool)
        hist += np.bincount(b.ravel(), minlength=n_buckets)
        kept = np.sort(np.asarray(pool)[wanted[b]])  # per block: small sorts are faster than one big one
        left += np.searchsorted(kept, queries, side="left")
        right += np.searchsorted(kept, queries, side="right")
    lower = np.cumsum(hist) - hist  # values in lower buckets
    kept_hist = np.where(wanted, hist, 0)
    first = np.cumsum(kept_hist) - kept_hist  # kept values in lower buckets
    return lower[q_bucket] + left - first[q_bucket], right - left


def _auc_micro(y: np.ndarray, s: np.ndarray) -> float:
    """Pooled ROC AUC by the rank-sum of the smaller class (midranks for ties): exact, no sort of all N x L scores."""
    n_pos = int(np.count_nonzero(y))
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    minority = n_pos <= n_neg  # the class whose ranks are summed
    blocks = list(_row_blocks(y.shape[0], None, y.shape[1]))
    q = np.sort(np.concatenate([s[b][y[b] == minority] for b in blocks]))  # sorted queries search faster
    below, equal = _below_and_equal(q, (s[b] for b in blocks))
    m = len(q)
    u = float((below + (equal + 1) / 2).sum() - m * (m + 1) / 2) / (n_pos * n_neg)
    return u if minority else 1.0 - u


def _column_stats(y: np.ndarray, s: np.ndarray, rows: np.ndarray | None, mode: str) -> tuple[np.ndarray, ...]:
    """Per code over the given documents: positives, AP (sklearn's average_precision_score) and ROC AUC (NaN
    without both classes). One integer sort per block of transposed columns."""
    n_docs, n_codes = (y.shape[0] if rows is None else len(rows)), y.shape[1]
    n_pos, ap, auc = np.zeros(n_codes, dtype=np.int64), np.full(n_codes, np.nan), np.full(n_codes, np.nan)
    width = max(1, _BLOCK_CELLS // max(n_docs, 1))
    for c0 in range(0, n_codes, width):
        cols = slice(c0, min(n_codes, c0 + width))
        yb, sb = (y[:, cols], s[:, cols]) if rows is None else (y[rows, cols], s[rows, cols])
        w = yb.shape[1]
        row, _, pos, precision, u = _rank_positives(sb, yb, 0, mode)
        n_pos[cols] = pos
        ap[cols] = _div(np.bincount(row, weights=precision, minlength=w), pos, np.nan)
        auc[cols] = _div(np.bincount(row, weights=u, minlength=w), pos * (n_docs - pos), np.nan)
    return n_pos, ap, auc


def _counts_above(y: np.ndarray, s: np.ndarray, thresholds: np.ndarray, ev: _EvalSet) -> tuple[np.ndarray, ...]:
    """Positives, and positive / all cells with score > t for every threshold t (float64 comparisons)."""
    n_codes = y.shape[1] if ev.codes is None else len(ev.codes)
    blocks = list(_row_blocks(y.shape[0], ev.rows, n_codes))
    positives = np.concatenate([_take(s, b, ev.codes)[_take(y, b, ev.codes)] for b in blocks])
    n_cells = sum(_take(y, b, ev.codes).size for b in blocks)
    below, equal = _below_and_equal(thresholds, (_take(s, b, ev.codes) for b in blocks))
    pos_below, pos_equal = _below_and_equal(thresholds, [positives])
    return len(positives), len(positives) - pos_below - pos_equal, n_cells - below - equal


# ------------------------------------------------------------------------------------------------------- the API


def _compute(y: np.ndarray, s: np.ndarray, threshold: float, names: Iterable[str]) -> dict[str, float]:
    names = set(names)
    unknown = names - set(METRIC_NAMES)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: {METRIC_NAMES}")
    mode = _key_mode(s)
    out: dict[str, float] = {}
    docs = _document_stats(y, s, threshold, _eval_set(y), mode, ranking=bool(names & _RANKING))
    for name in names & _PER_DOCUMENT:
        out[name] = float(_document_metric(docs, name))
    tp, fp, fn = docs.code_tp, docs.code_fp, docs.code_fn
    out["f1_macro"] = _mean(_div(tp, tp + 0.5 * (fp + fn)))
    out["precision_macro"] = _mean(_div(tp, tp + fp))
    out["recall_macro"] = _mean(_div(tp, tp + fn))
    if "auc_micro" in names:
        out["auc_micro"] = _auc_micro(y, s)
    if "auc_macro" in names:
        auc = _column_stats(y, s, None, mode)[2]
        out["auc_macro"] = _mean(auc[~np.isnan(auc)])
    return {name: out[name] for name in METRIC_NAMES if name in names}


def compute_metrics(y_true, scores, threshold: float, metrics: Iterable[str] | None = None) -> dict[str, float]:
    """The metrics of METRIC_NAMES (module docstring; `metrics`: a subset, e.g. ["map"] for model selection, which
    skips the AUC passes) at `threshold`; predictions are scores > threshold."""
    y, s = _prepare(y_true, scores)
    return _compute(y, s, threshold, METRIC_NAMES if metrics is None else metrics)


def threshold_counts(y_true, scores, grid=None) -> tuple[int, np.ndarray, np.ndarray]:
    """(positive cells, true positives [len(grid)], predicted cells [len(grid)]) of scores > t over the full matrix,
    for every t of `grid` (default THRESHOLD_GRID). Counts add up over row blocks, so sites of a federation can each
    send theirs and the server tunes the threshold on their sum (`best_threshold`) without seeing a score."""
    y, s = _prepare(y_true, scores)
    _key_mode(s)  # NaN check
    grid = THRESHOLD_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    return _counts_above(y, s, grid, _EvalSet(None, None))


def best_threshold(positives, true_positives, predicted, grid=None) -> tuple[float, float]:
    """(threshold, micro-F1) of the grid value with the best micro-F1 given `threshold_counts` (summed over any
    number of row blocks); ties go to the smallest threshold."""
    grid = THRESHOLD_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    f1 = _div(2 * np.asarray(true_positives, np.float64),  # 2TP / (2TP + FP + FN) = 2TP / (predicted + positives)
              np.asarray(predicted, np.float64) + positives)
    best = int(np.argmax(f1))
    return float(grid[best]), float(f1[best])


def tune_threshold(y_true, scores, grid=None) -> float:
    """Edin's decision boundary: the grid value (default np.linspace(0, 1, 100)) with the best micro-F1 of
    scores > t over the full matrix; ties go to the smallest threshold. One pass over the scores for all of them."""
    grid = THRESHOLD_GRID if grid is None else np.unique(np.asarray(grid, dtype=np.float64))
    return best_threshold(*threshold_counts(y_true, scores, grid), grid)[0]


def per_code_metrics(y_true, scores, threshold: float, codes: list[str], train_counts: list[int] | np.ndarray,
                     rare_cutoff: int | None = None) -> dict:
    """Per code on the evaluated documents: {code, train_count, support, f1, precision, recall, ap}; a code without
    test positives is outside Edin's evaluation set and gets NaN. The summary splits the evaluated codes at
    `rare_cutoff` training examples (default: their median), rare <= cut-off < frequent; an empty group gives None.
    The mean F1 over the evaluated codes equals compute_metrics' f1_macro."""
    y, s = _prepare(y_true, scores)
    train_counts = np.asarray(train_counts)
    if len(codes) != y.shape[1] or len(train_counts) != y.shape[1]:
        raise ValueError(f"{y.shape[1]} codes in y_true, {len(codes)} names, {len(train_counts)} train counts")
    mode = _key_mode(s)
    ev = _eval_set(y)
    docs = _document_stats(y, s, threshold, _EvalSet(ev.rows, None), mode, ranking=False)
    tp, fp, fn = docs.code_tp, docs.code_fp, docs.code_fn
    support = tp + fn
    evaluated = support > 0
    f1 = np.where(evaluated, _div(tp, tp + 0.5 * (fp + fn)), np.nan)
    precision = np.where(evaluated, _div(tp, tp + fp), np.nan)
    recall = np.where(evaluated, _div(tp, support), np.nan)
    ap = _column_stats(y, s, ev.rows, mode)[1]
    cutoff = rare_cutoff if rare_cutoff is not None else (
        float(np.median(train_counts[evaluated])) if evaluated.any() else None)
    rare = evaluated & (train_counts <= cutoff) if cutoff is not None else np.zeros_like(evaluated)
    frequent = evaluated & ~rare

    def mean_or_none(values: np.ndarray, mask: np.ndarray) -> float | None:
        return float(values[mask].mean()) if mask.any() else None

    rows = [{"code": str(c), "train_count": int(n), "support": int(k), "f1": float(a), "precision": float(p),
             "recall": float(r), "ap": float(q)}
            for c, n, k, a, p, r, q in zip(codes, train_counts, support, f1, precision, recall, ap, strict=True)]
    return {
        "codes": rows, "threshold": float(threshold), "rare_cutoff": cutoff, "n_codes": int(evaluated.sum()),
        "n_frequent": int(frequent.sum()), "n_rare": int(rare.sum()),
        "f1_macro": mean_or_none(f1, evaluated), "mean_ap": mean_or_none(ap, evaluated),
        "f1_macro_frequent": mean_or_none(f1, frequent), "f1_macro_rare": mean_or_none(f1, rare),
        "mean_ap_frequent": mean_or_none(ap, frequent), "mean_ap_rare": mean_or_none(ap, rare),
    }


def paired_bootstrap(y_true, scores_a, threshold_a: float, scores_b, threshold_b: float, metric: str = "f1_micro",
                     n_resamples: int = 1000, seed: int = 0) -> dict:
    """Paired bootstrap of metric(a) - metric(b): resample the evaluated documents with replacement, the same
    indices for both systems. The evaluated codes stay those of the full set for the per-document metrics (micro
    P/R/F1, exact match, ranking metrics: resampled from per-document counts, cheap); the others (macro, AUC)
    recompute compute_metrics on every resample (slow). ci: 2.5 / 97.5 percentiles of the resampled differences;
    p_value: two-sided, min(1, 2 x the fraction of resamples whose difference has the opposite sign of the observed
    one or is zero); 1 when the observed difference is zero."""
    y, sa = _prepare(y_true, scores_a)
    _, sb = _prepare(y_true, scores_b)
    if sb.shape != y.shape:
        raise ValueError(f"scores_b {sb.shape} does not match y_true {y.shape}")
    if metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; known: {METRIC_NAMES}")
    ev = _eval_set(y)
    doc_rows = np.arange(y.shape[0]) if ev.rows is None else ev.rows
    n = len(doc_rows)
    rng = np.random.default_rng(seed)
    diffs = []
    if metric in _PER_DOCUMENT:
        ranking = metric in _RANKING
        da = _document_stats(y, sa, threshold_a, ev, _key_mode(sa), ranking)
        db = _document_stats(y, sb, threshold_b, ev, _key_mode(sb), ranking)
        a, b = float(_document_metric(da, metric)), float(_document_metric(db, metric))
        chunk = max(1, (1 << 21) // max(n, 1))  # resamples per batch of indices
        for r0 in range(0, n_resamples, chunk):
            idx = rng.integers(0, n, size=(min(chunk, n_resamples - r0), n))
            diffs.append(_document_metric(da, metric, idx) - _document_metric(db, metric, idx))
    else:
        a = _compute(y, sa, threshold_a, [metric])[metric]
        b = _compute(y, sb, threshold_b, [metric])[metric]
        for _ in range(n_resamples):
            rows = doc_rows[rng.integers(0, n, size=n)]
            diffs.append(np.asarray([_compute(y[rows], sa[rows], threshold_a, [metric])[metric]
                                     - _compute(y[rows], sb[rows], threshold_b, [metric])[metric]]))
    d = np.concatenate(diffs) if diffs else np.zeros(0)
    d = d[~np.isnan(d)]
    observed = a - b
    if observed == 0 or not d.size:
        p = 1.0
    else:
        p = min(1.0, 2.0 * float(np.mean(d * np.sign(observed) <= 0)))
    low, high = (np.percentile(d, [2.5, 97.5]) if d.size else (np.nan, np.nan))
    return {"metric": metric, "a": a, "b": b, "diff": observed, "ci_low": float(low), "ci_high": float(high),
            "p_value": p, "n_resamples": int(n_resamples)}


def mcnemar(y_true, pred_a, pred_b) -> dict:
    """McNemar's test on the per-(document, code) decisions of two systems (all cells given): a_only_correct /
    b_only_correct are the discordant cells. Fewer than 25 of them: exact two-sided binomial (p = 2 P[X <= min],
    X ~ Bin(n, 1/2), capped at 1; statistic = min). Otherwise chi-square with 1 degree of freedom and continuity
    correction, (max(|b - c| - 1, 0))^2 / (b + c)."""
    from scipy import stats

    y = np.asarray(y_true)
    y = y if y.dtype == bool else y.astype(bool)
    pa, pb = np.asarray(pred_a, dtype=bool), np.asarray(pred_b, dtype=bool)
    if pa.shape != y.shape or pb.shape != y.shape:
        raise ValueError(f"shapes differ: y_true {y.shape}, pred_a {pa.shape}, pred_b {pb.shape}")
    a_only = discordant = 0
    for rows in _row_blocks(y.shape[0], None, y.shape[1] if y.ndim > 1 else 1):
        differ = pa[rows] != pb[rows]  # exactly one of the two systems is right in a binary cell
        discordant += int(np.count_nonzero(differ))
        a_only += int(np.count_nonzero(differ & (pa[rows] == y[rows])))
    b_only = discordant - a_only
    if discordant < _EXACT_BELOW:
        low = min(a_only, b_only)
        statistic = float(low)
        p = 1.0 if discordant == 0 else min(1.0, 2.0 * float(stats.binom.cdf(low, discordant, 0.5)))
        method = "exact"
    else:
        statistic = max(abs(a_only - b_only) - 1, 0) ** 2 / discordant
        p = float(stats.chi2.sf(statistic, 1))
        method = "chi2"
    return {"a_only_correct": a_only, "b_only_correct": b_only, "statistic": float(statistic), "p_value": p,
            "method": method}


def plot_report(per_code: dict, y_true, scores, out_dir, title: str = "") -> list[Path]:
    """`f1_vs_frequency.png` (per-code test F1 against training examples, log x, with the mean per log bin) and
    `pr_curve.png` (micro-averaged precision-recall curve on the evaluated cells; `scores` may be one array or
    {system name: array}, one curve each). Returns both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "f1_vs_frequency.png", out / "pr_curve.png"]

    evaluated = [c for c in per_code["codes"] if c["support"] > 0]
    counts = np.maximum(np.asarray([c["train_count"] for c in evaluated], dtype=np.float64), 1)
    f1 = np.asarray([c["f1"] for c in evaluated], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(counts, f1, s=6, alpha=0.3, label="code")
    if len(counts):
        edges = np.geomspace(counts.min(), counts.max() * 1.0001, 16)
        which = np.clip(np.searchsorted(edges, counts, side="right") - 1, 0, len(edges) - 2)
        filled = np.unique(which)
        centres = np.sqrt(edges[filled] * edges[filled + 1])
        ax.plot(centres, [f1[which == i].mean() for i in filled], "o-", color="C3", label="mean per bin")
    if per_code.get("rare_cutoff") is not None:
        ax.axvline(max(per_code["rare_cutoff"], 1), color="grey", ls="--", lw=1, label="rare / frequent cut-off")
    ax.set(xscale="log", xlabel="training examples of the code", ylabel="test F1", ylim=(-0.02, 1.02),
           title=f"Per-code F1 vs frequency {title}".strip())
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)

    systems = scores if isinstance(scores, dict) else {title or "system": scores}
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, sys_scores in systems.items():
        y, s = _prepare(y_true, sys_scores)
        ev = _eval_set(y)
        n_codes = y.shape[1] if ev.codes is None else len(ev.codes)
        positives = np.concatenate([_take(s, b, ev.codes)[_take(y, b, ev.codes)]
                                    for b in _row_blocks(y.shape[0], ev.rows, n_codes)] or [np.zeros(0)])
        if not positives.size:
            continue
        # Thresholds at quantiles of the positives' scores space the curve evenly in recall.
        thresholds = np.unique(np.concatenate([np.quantile(positives, np.linspace(0, 1, 257)),
                                               np.linspace(0, 1, 101), [positives.min() - 1e-12]]))
        n_pos, tp, above = _counts_above(y, s, thresholds, ev)
        keep = above > 0
        ax.plot(tp[keep] / n_pos, tp[keep] / above[keep], label=name)
    ax.set(xlabel="recall (micro)", ylabel="precision (micro)", xlim=(0, 1), ylim=(0, 1.02),
           title=f"Precision-recall {title}".strip())
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths
