"""Ranking metrics for next-visit diagnosis prediction, vectorised over numpy arrays: y bool [N, C] (the categories
of the next visit, at least one per sample), scores float [N, C] (any monotone score: logits, probabilities, counts).

Ranking: each sample's categories in descending score, ties broken by the lower category index (a stable sort of
-score; -0.0 ties with 0.0). The tie rule matters for the count-based baselines, where many categories share a count
(often 0): among them the lower index ranks first, deterministically. Non-finite scores are a ValueError.
For one sample with true set Y (|Y| >= 1), rel_i = 1 if the i-th ranked category is in Y, and k' = min(k, C) (a cut-off
beyond the C categories uses the full ranking):
- P@k = (1/k') sum_{i<=k'} rel_i  (divided by k', not k, so that a cut-off beyond C is not a penalty).
- recall@k = (1/|Y|) sum_{i<=k'} rel_i  (Doctor AI's recall@k, Choi et al. 2016).
- AP@K = (1/min(K, |Y|)) sum_{i<=K'} P@i rel_i  (the usual apk); MAP@K is its mean over samples.
- AR@K = (1/K') sum_{i=1..K'} recall@i: the mean of the recall curve over the first K' ranks (its area, normalised),
  which rewards finding the true categories early as well as finding many; MAR@K is its mean over samples.
  AR@K <= recall@K, with equality only when every hit is at rank 1 (recall@1 = recall@K); a perfect ranking with
  |Y| = 2 and K = 20 gets (1/20)(1/2 + 19) = 0.975, not 1. Klioui et al. 2025 report MAP@K / MAR@K without
  formulas, so these two definitions are ours.
- NDCG@k (binary gains) = DCG / IDCG, DCG = sum_{i<=k'} rel_i / log2(i + 1), IDCG = sum_{i<=min(k, |Y|)} 1 / log2(i + 1).
- auprc_micro: average precision over all (sample, category) cells pooled, exactly sklearn's
  `average_precision_score(y.ravel(), scores.ravel())` (step-wise: sum over the distinct scores t, from the highest,
  of (recall(t) - recall(t_prev)) precision(t), where a cell is predicted at t when its score >= t).
ranking_metrics reports the means over samples of the per-sample values (`per_sample_metrics`), which the paired
bootstrap resamples. A sample with an empty true set is a ValueError (the dataset builder never emits one).
Cost: rows go in blocks of about 4M cells. Only the best max(k) columns of a row are sorted (np.argpartition, then the
cells tied with the boundary value taken in index order, then a stable sort), so a 100k x 8k float32 matrix needs the
inputs plus a few 32 MB temporaries. auprc_micro sorts one block at a time and counts the cells at or above each
distinct positive score, instead of sorting all N x C cells as sklearn does. On 2 CPU cores
10k x 8k float32 takes about 1 s for the per-sample metrics and 3 s for auprc_micro.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cmbert.core.errors import UserError

TOP_KS = (10, 20, 30)  # recall@k, precision@k, ndcg@k
AVERAGE_KS = (20, 40, 60)  # MAP@K, MAR@K
_BLOCK_CELLS = 1 << 22  # cells per row block: a few 32 MB temporaries at a time, whatever N x C is
_FULL_SORT_MAX = 2048  # up to this many categories a row block gets a full stable argsort (simpler, fast enough)
_NAME = re.compile(r"^(recall|precision|ndcg|map|mar)@([1-9][0-9]*)$")


# ------------------------------------------------------------------------------------------------------ plumbing


def _prepare(y, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    y = y if y.dtype == bool else y != 0
    s = np.asarray(scores)
    if y.ndim != 2 or s.shape != y.shape:
        raise ValueError(f"y and scores must be 2-D of the same shape, got {y.shape} and {s.shape}")
    if y.shape[0] == 0 or y.shape[1] == 0:
        raise ValueError(f"need at least one sample and one category, got shape {y.shape}")
    return y, s


def _parse(names) -> list[tuple[str, str, int]]:
    parsed = []
    for name in names:
        m = _NAME.match(name)
        if m is None:
            raise UserError(f"unknown metric {name!r}: expected recall|precision|ndcg|map|mar @ a positive integer")
        parsed.append((name, m.group(1), int(m.group(2))))
    return parsed


def _row_blocks(n_rows: int, n_cols: int):
    step = max(1, _BLOCK_CELLS // n_cols)
    for r0 in range(0, n_rows, step):
        yield r0, min(n_rows, r0 + step)


def _score_block(s: np.ndarray, r0: int, r1: int) -> np.ndarray:
    block = s[r0:r1]
    if not np.issubdtype(block.dtype, np.floating):
        block = block.astype(np.float64)  # counts, bools: -score must not wrap around
    if not np.isfinite(block).all():
        bad = r0 + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
        raise ValueError(f"scores must be finite; row {bad} has NaN or inf")
    return block


def _top_columns(block: np.ndarray, m: int) -> np.ndarray:
    """The m best columns of each row, best first: descending score, ties by the lower column index. [B, m] int.
    Above _FULL_SORT_MAX columns: partition at the m-th largest value v, keep every column above v and the lowest-index
    columns equal to v until there are m, then stable-sort those m (already in index order) by -score."""
    n_rows, n_cols = block.shape
    m = min(m, n_cols)
    if n_cols <= _FULL_SORT_MAX or m == n_cols:
        return np.argsort(-block, axis=1, kind="stable")[:, :m]
    v = np.partition(block, n_cols - m, axis=1)[:, n_cols - m, None]  # the m-th largest score of each row
    above = block > v
    tied = block == v
    need = m - np.count_nonzero(above, axis=1)  # >= 1: v itself is tied
    take = above | (tied & (np.cumsum(tied, axis=1, dtype=np.int32) <= need[:, None]))
    cols = np.nonzero(take)[1].reshape(n_rows, m)  # row-major, so each row's columns in index order
    order = np.argsort(-np.take_along_axis(block, cols, axis=1), axis=1, kind="stable")
    return np.take_along_axis(cols, order, axis=1)


def _per_sample(y: np.ndarray, s: np.ndarray, parsed: list[tuple[str, str, int]]) -> dict[str, np.ndarray]:
    n, c = y.shape
    out = {name: np.empty(n, dtype=np.float64) for name, _, _ in parsed}
    m = min(c, max(k for _, _, k in parsed))
    ranks = np.arange(1, m + 1, dtype=np.float64)
    discount = 1.0 / np.log2(ranks + 1.0)
    ideal_dcg = np.cumsum(discount)  # IDCG for min(k, |Y|) = 1 .. m
    for r0, r1 in _row_blocks(n, c):
        block = _score_block(s, r0, r1)
        yb = y[r0:r1]
        n_true = np.count_nonzero(yb, axis=1).astype(np.float64)
        if not n_true.all():
            bad = r0 + np.flatnonzero(n_true == 0)
            raise ValueError(f"{len(bad)} sample(s) have an empty true set, first rows {bad[:5].tolist()}")
        rel = np.take_along_axis(yb, _top_columns(block, m), axis=1).astype(np.float64)
        hits = np.cumsum(rel, axis=1)  # hits[:, i-1] = sum_{j<=i} rel_j
        cum = {}  # cumulative sums along the ranks, built when a metric needs them
        for name, kind, k in parsed:
            kk = min(k, c)
            if kind == "precision":
                value = hits[:, kk - 1] / kk
            elif kind == "recall":
                value = hits[:, kk - 1] / n_true
            elif kind == "map":  # sum_{i<=K'} P@i rel_i / min(K, |Y|)
                if "ap" not in cum:
                    cum["ap"] = np.cumsum(hits / ranks * rel, axis=1)
                value = cum["ap"][:, kk - 1] / np.minimum(k, n_true)
            elif kind == "mar":  # sum_{i<=K'} recall@i / K'
                if "ar" not in cum:
                    cum["ar"] = np.cumsum(hits, axis=1)
                value = cum["ar"][:, kk - 1] / (n_true * kk)
            else:  # ndcg; |Y| <= C, so min(k, |Y|) <= m indexes ideal_dcg
                if "dcg" not in cum:
                    cum["dcg"] = np.cumsum(rel * discount, axis=1)
                value = cum["dcg"][:, kk - 1] / ideal_dcg[np.minimum(k, n_true).astype(np.int64) - 1]
            out[name][r0:r1] = value
    return out


def _auprc_micro(y: np.ndarray, s: np.ndarray) -> float:
    """sklearn's average_precision_score of the pooled cells without sorting them: only the distinct scores of the
    positives are thresholds where recall moves, so count the cells (all, positive) at or above each of them."""
    pos_scores = np.concatenate([s[r0:r1][y[r0:r1]] for r0, r1 in _row_blocks(*y.shape)])
    thresholds, n_pos = np.unique(pos_scores, return_counts=True)  # ascending
    predicted = np.zeros(len(thresholds), dtype=np.int64)  # cells scored >= thresholds[j]
    for r0, r1 in _row_blocks(*y.shape):
        block = np.sort(s[r0:r1], axis=None)  # faster than placing each cell among the thresholds
        predicted += block.size - np.searchsorted(block, thresholds, side="left")
    tp = np.cumsum(n_pos[::-1])[::-1]  # positives scored >= thresholds[j]
    return float(np.sum(n_pos / tp[0] * (tp / predicted)))


# ------------------------------------------------------------------------------------------------------ metrics


def per_sample_metrics(y, scores, names) -> dict[str, np.ndarray]:
    """{name: float64 [N]} for names like "recall@20", "precision@30", "ndcg@10", "map@40" (AP@40 of each sample),
    "mar@20" (AR@20 of each sample); their means are what ranking_metrics reports."""
    y, s = _prepare(y, scores)
    parsed = _parse(names)
    if not parsed:
        return {}
    return _per_sample(y, s, parsed)


def ranking_metrics(y, scores, top_ks=TOP_KS, average_ks=AVERAGE_KS) -> dict[str, float]:
    """{"recall@k", "precision@k", "ndcg@k" for k in top_ks; "map@K", "mar@K" for K in average_ks; "auprc_micro":
    floats in [0, 1]; "n_samples": int}. Definitions in the module docstring."""
    y, s = _prepare(y, scores)
    names = [f"{kind}@{k}" for k in top_ks for kind in ("recall", "precision", "ndcg")]
    names += [f"{kind}@{k}" for k in average_ks for kind in ("map", "mar")]
    values = _per_sample(y, s, _parse(names)) if names else {}
    out = {name: float(v.mean()) for name, v in values.items()}
    out["auprc_micro"] = _auprc_micro(y, s)
    out["n_samples"] = int(y.shape[0])
    return out


def paired_bootstrap(y, scores_a, scores_b, metric: str = "recall@20", n_resamples: int = 1000,
                     seed: int = 0) -> dict:
    """Paired bootstrap of metric(a) - metric(b) over samples: the same resampled indices (with replacement) for both
    systems, the metric being a mean of per-sample values. ci95: 2.5 / 97.5 percentiles of the resampled deltas.
    p_value: two-sided, min(1, 2 x the share of resampled deltas on the other side of 0 from the observed delta, zero
    included); 1 when the observed delta is 0."""
    y, sa = _prepare(y, scores_a)
    _, sb = _prepare(y, scores_b)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    parsed = _parse([metric])
    per_a, per_b = _per_sample(y, sa, parsed)[metric], _per_sample(y, sb, parsed)[metric]
    a, b = float(per_a.mean()), float(per_b.mean())
    diff = per_a - per_b
    delta = a - b
    n = len(diff)
    rng = np.random.default_rng(seed)
    chunk = max(1, (1 << 21) // n)  # resamples per batch of indices (16 MB of int64)
    deltas = np.concatenate([diff[rng.integers(0, n, size=(min(chunk, n_resamples - r0), n))].mean(axis=1)
                             for r0 in range(0, n_resamples, chunk)])
    if delta > 0:
        p = 2 * float(np.mean(deltas <= 0))
    elif delta < 0:
        p = 2 * float(np.mean(deltas >= 0))
    else:
        p = 1.0
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return {"metric": metric, "a": a, "b": b, "delta": delta, "ci95": [float(lo), float(hi)],
            "p_value": min(1.0, p), "n_resamples": int(n_resamples)}


def plot_comparison(results: dict[str, dict[str, float]], path, metrics=("recall@20", "mar@20", "map@20", "ndcg@20"),
                    title: str = "") -> Path:
    """Grouped bar chart: one group per metric, one bar per system (in the dict's order), each bar labelled with its
    value. Saves a PNG at `path` (parents created) and returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(metrics)
    for system, values in results.items():
        missing = [m for m in metrics if m not in values]
        if missing:
            raise ValueError(f"system {system!r} lacks metrics {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_systems = max(1, len(results))
    width = 0.8 / n_systems
    x = np.arange(len(metrics))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + len(metrics) * (0.5 + 0.45 * n_systems)), 4.5))
    for i, (system, values) in enumerate(results.items()):
        heights = [float(values[m]) for m in metrics]
        bars = ax.bar(x + (i - (n_systems - 1) / 2) * width, heights, width, label=system)
        ax.bar_label(bars, labels=[f"{h:.3f}" for h in heights], fontsize=7, padding=2)
    ax.set_xticks(x, metrics)
    ax.set(ylabel="value", ylim=(0, 1.08), title=title)
    if results:
        ax.legend(loc="upper left", fontsize=8, ncols=min(n_systems, 4))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
