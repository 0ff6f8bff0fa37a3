"""cmbert/core/multilabel.py: every metric against scikit-learn on Edin's evaluation set (random inputs with a code and a
document without positives, a code that is always positive, ties, -0.0, float32 / float64, logits, many blocks),
P@k / R@k / R-precision by hand and against a python loop, threshold tuning against brute force over the grid, the
paired bootstrap, McNemar by hand, per-code metrics against scikit-learn, and the report PNGs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    label_ranking_average_precision_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from cmbert.core import multilabel as M
from cmbert.core.multilabel import (
    METRIC_NAMES,
    THRESHOLD_GRID,
    compute_metrics,
    mcnemar,
    paired_bootstrap,
    per_code_metrics,
    plot_report,
    tune_threshold,
)


def _loop_ranking(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """P@k, R@k, R-precision one document at a time; ties: negatives first (sorted by (-score, label))."""
    out: dict[str, list[float]] = {k: [] for k in ("precision_at_5", "precision_at_8", "precision_at_15",
                                                   "recall_at_10", "recall_at_15", "r_precision")}
    for yr, sr in zip(y, s, strict=True):
        ranked = yr[sorted(range(len(sr)), key=lambda j: (-sr[j], yr[j]))]
        n_pos = yr.sum()
        for k in (5, 8, 15):
            out[f"precision_at_{k}"].append(ranked[:k].sum() / k)
        for k in (10, 15):
            out[f"recall_at_{k}"].append(ranked[:k].sum() / n_pos)
        out["r_precision"].append(ranked[:n_pos].sum() / n_pos)
    return {k: float(np.mean(v)) for k, v in out.items()}


def _reference(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, float]:
    """scikit-learn on Edin's evaluation set (codes and documents with a positive); AUC on the full matrix."""
    rows, cols = y.any(axis=1), y.any(axis=0)
    ye, se = y[rows][:, cols], s[rows][:, cols]
    pred = se > np.float64(threshold)
    both = np.flatnonzero(y.any(axis=0) & (~y).any(axis=0))
    ref = {
        "f1_micro": f1_score(ye, pred, average="micro", zero_division=0),
        "f1_macro": f1_score(ye, pred, average="macro", zero_division=0),
        "precision_micro": precision_score(ye, pred, average="micro", zero_division=0),
        "recall_micro": recall_score(ye, pred, average="micro", zero_division=0),
        "precision_macro": precision_score(ye, pred, average="macro", zero_division=0),
        "recall_macro": recall_score(ye, pred, average="macro", zero_division=0),
        "auc_micro": roc_auc_score(y.ravel(), s.ravel()),
        "auc_macro": np.mean([roc_auc_score(y[:, c], s[:, c]) for c in both]),
        "map": label_ranking_average_precision_score(ye, se),
        "exact_match": accuracy_score(ye, pred),
    }
    return {**ref, **_loop_ranking(ye, se)}


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    n_docs, n_codes = int(rng.integers(20, 70)), int(rng.integers(16, 45))  # >= 15 codes: every cut-off fits
    y = rng.random((n_docs, n_codes)) < rng.uniform(0.05, 0.4)
    y[:, 0] = False  # a code without positives: outside the evaluation set, a negative-only column for AUC
    y[:, 1] = True  # a code that is always positive: no AUC
    y[3] = False  # a document without positives: outside the evaluation set
    s = np.clip(rng.normal(0.25 + 0.4 * y, 0.2), 0, 1)
    if seed % 2:
        s = np.round(s, 1)  # heavy ties, including at the cut-offs and the threshold
        s[s == 0] = -0.0 if seed % 4 == 1 else 0.0  # -0.0 ties 0.0
        s[0, :3] = [0.0, -0.0, 0.0]
    if seed % 3 == 0:
        s = s.astype(np.float32)
    threshold = 0.5 if seed % 2 else float(rng.uniform(0.2, 0.6))
    return y, s, threshold


@pytest.mark.parametrize("seed", range(8))
def test_metrics_match_sklearn(seed):
    y, s, threshold = _random_case(seed)
    got = compute_metrics(y, s, threshold)
    assert tuple(got) == METRIC_NAMES
    ref = _reference(y, s, threshold)
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(ref[name], abs=1e-12), name
        assert 0 <= got[name] <= 1


def test_logits_and_integer_labels():
    """Negative scores (logits) take the order-preserving int64 keys; 0/1 labels are accepted."""
    rng = np.random.default_rng(11)
    y = rng.random((40, 20)) < 0.3
    s = np.round(rng.normal(2.0 * y - 1, 1.5), 1).astype(np.float32)  # ties across zero and at +-x
    got = compute_metrics(y.astype(np.int8), s, 0.0)
    ref = _reference(y, s, 0.0)
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(ref[name], abs=1e-12), name


def test_float32_and_float64_agree():
    y, s, threshold = _random_case(4)
    s32 = s.astype(np.float32)
    a, b = compute_metrics(y, s32, threshold), compute_metrics(y, s32.astype(np.float64), threshold)
    assert a == pytest.approx(b, abs=1e-12)


def test_many_blocks_equal_one_block(monkeypatch):
    """Blocks of a few rows / columns (and a document without positives mid-block) give the same numbers."""
    y, s, threshold = _random_case(5)
    y[10] = False
    one, one_threshold = compute_metrics(y, s, threshold), tune_threshold(y, s)
    one_codes = per_code_metrics(y, s, threshold, [f"c{i}" for i in range(y.shape[1])], np.arange(y.shape[1]))
    monkeypatch.setattr(M, "_BLOCK_CELLS", 50)
    assert compute_metrics(y, s, threshold) == pytest.approx(one, abs=1e-12)
    many_codes = per_code_metrics(y, s, threshold, [f"c{i}" for i in range(y.shape[1])], np.arange(y.shape[1]))
    assert [c["ap"] for c in many_codes["codes"]] == pytest.approx([c["ap"] for c in one_codes["codes"]],
                                                                   nan_ok=True)
    assert tune_threshold(y, s) == one_threshold


def test_ranking_metrics_by_hand():
    """16 codes. Document 0: scores fall with the index, positives at ranks 0, 2, 9. Document 1: ranks 3-5 tie and
    hold the only positive, which ranks behind both tied negatives (rank 5). Document 2: every code positive."""
    n_codes = 16
    y = np.zeros((3, n_codes), dtype=bool)
    y[0, [0, 2, 9]] = True
    y[1, 4] = True
    y[2] = True
    s = np.tile(1 - np.arange(n_codes) / n_codes, (3, 1))
    s[1, 3:6] = 0.7
    got = compute_metrics(y, s, threshold=0.5)
    docs = [
        {"precision_at_5": 2 / 5, "precision_at_8": 2 / 8, "precision_at_15": 3 / 15, "recall_at_10": 1,
         "recall_at_15": 1, "r_precision": 2 / 3, "map": (1 + 2 / 3 + 3 / 10) / 3},
        {"precision_at_5": 0, "precision_at_8": 1 / 8, "precision_at_15": 1 / 15, "recall_at_10": 1,
         "recall_at_15": 1, "r_precision": 0, "map": 1 / 6},  # AP: the precision at the end of the tie group
        {"precision_at_5": 1, "precision_at_8": 1, "precision_at_15": 1, "recall_at_10": 10 / 16,
         "recall_at_15": 15 / 16, "r_precision": 1, "map": 1},
    ]
    for name in docs[0]:
        assert got[name] == pytest.approx(np.mean([d[name] for d in docs])), name


def test_threshold_metrics_by_hand():
    y = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 1]], dtype=bool)
    s = np.array([[0.9, 0.6, 0.4], [0.7, 0.8, 0.1], [0.1, 0.2, 0.9]])
    got = compute_metrics(y, s, threshold=0.5)  # predicted: {0, 1}, {0, 1}, {2}: TP 3, FP 2, FN 1
    want = {"f1_micro": 3 / (3 + 1.5), "precision_micro": 3 / 5, "recall_micro": 3 / 4,
            "f1_macro": (2 / 3 + 2 / 3 + 2 / 3) / 3, "precision_macro": (1 / 2 + 1 / 2 + 1) / 3,
            "recall_macro": (1 + 1 + 1 / 2) / 3, "exact_match": 1 / 3,
            "auc_micro": 18 / 20,  # positives .9 .4 .8 .9 beat 5, 3, 5, 5 of the 5 negatives
            "auc_macro": 1.0}
    for name, value in want.items():
        assert got[name] == pytest.approx(value), name
    assert compute_metrics(y, s, threshold=0.9)["f1_micro"] == 0  # strict >: 0.9 predicts nothing


def test_ranking_against_loop_with_ties():
    rng = np.random.default_rng(3)
    y = rng.random((60, 30)) < 0.2
    y[:, 0] = True
    s = rng.integers(0, 4, size=(60, 30)) / 4  # four distinct scores: ties everywhere
    got, ref = compute_metrics(y, s, 0.5), _loop_ranking(y[y.any(1)], s[y.any(1)])
    for name, value in ref.items():
        assert got[name] == pytest.approx(value), name
    assert got["map"] == pytest.approx(label_ranking_average_precision_score(y, s))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tune_threshold_equals_brute_force(dtype):
    rng = np.random.default_rng(7)
    y = rng.random((80, 25)) < 0.15
    s = np.clip(rng.normal(0.2 + 0.35 * y, 0.2), 0, 1).astype(dtype)
    s[:10] = THRESHOLD_GRID[rng.integers(0, 100, size=(10, 25))]  # scores exactly on the grid: strict >
    for grid in (None, [0.9, 0.1, 0.3, 0.3, 0.5]):
        values = THRESHOLD_GRID if grid is None else np.unique(grid)
        f1 = [f1_score(y.ravel(), s.ravel() > np.float64(t), zero_division=0) for t in values]
        assert tune_threshold(y, s, grid) == values[int(np.argmax(f1))]


def test_tune_threshold_ties_take_the_smallest():
    y = np.array([[True, False]])
    s = np.array([[0.9, 0.1]])
    assert tune_threshold(y, s, [0.2, 0.3, 0.5]) == 0.2  # every threshold in [0.1, 0.9) is perfect


def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    y = rng.random((300, 40)) < 0.1
    good = np.clip(rng.normal(0.2 + 0.5 * y, 0.15), 0, 1)
    bad = np.clip(rng.normal(0.3 + 0.1 * y, 0.2), 0, 1)

    same = paired_bootstrap(y, good, 0.5, good, 0.5, n_resamples=200)
    assert same["diff"] == 0 and same["ci_low"] <= 0 <= same["ci_high"] and same["p_value"] == 1

    better = paired_bootstrap(y, good, 0.5, bad, 0.4, n_resamples=200, seed=1)
    assert better["a"] == pytest.approx(compute_metrics(y, good, 0.5)["f1_micro"])
    assert better["b"] == pytest.approx(compute_metrics(y, bad, 0.4)["f1_micro"])
    assert better["diff"] == pytest.approx(better["a"] - better["b"])
    assert 0 < better["ci_low"] < better["diff"] < better["ci_high"] and better["p_value"] < 0.01
    reverse = paired_bootstrap(y, bad, 0.4, good, 0.5, n_resamples=200, seed=1)
    assert reverse["ci_high"] < 0 and reverse["ci_low"] == pytest.approx(-better["ci_high"])

    for metric in ("map", "precision_at_8", "exact_match", "f1_macro", "auc_macro"):  # per-document and recomputed
        out = paired_bootstrap(y, good, 0.5, bad, 0.4, metric=metric, n_resamples=20)
        a, b = compute_metrics(y, good, 0.5)[metric], compute_metrics(y, bad, 0.4)[metric]
        assert out["metric"] == metric and out["diff"] == pytest.approx(a - b)
        assert out["ci_low"] <= out["ci_high"]


def test_mcnemar_by_hand():
    y = np.zeros((2, 4), dtype=bool)
    a = np.zeros_like(y)
    b = np.zeros_like(y)
    b[0, :3] = True  # a right, b wrong: 3 cells
    a[1, 0] = True  # a wrong, b right: 1 cell
    out = mcnemar(y, a, b)
    assert (out["a_only_correct"], out["b_only_correct"], out["method"]) == (3, 1, "exact")
    assert out["p_value"] == pytest.approx(2 * (1 + 4) / 16)  # 2 P[X <= 1], X ~ Bin(4, 1/2)

    y = np.zeros((10, 10), dtype=bool)
    a, b = y.copy(), y.copy()
    b.ravel()[:40] = True
    a.ravel()[40:60] = True
    out = mcnemar(y, a, b)
    assert (out["a_only_correct"], out["b_only_correct"], out["method"]) == (40, 20, "chi2")
    assert out["statistic"] == pytest.approx(19**2 / 60)
    assert out["p_value"] == pytest.approx(stats.chi2.sf(19**2 / 60, 1))

    assert mcnemar(y, a, a)["p_value"] == 1


def test_per_code_metrics_match_sklearn():
    y, s, threshold = _random_case(2)
    n_codes = y.shape[1]
    codes = [f"C{i}" for i in range(n_codes)]
    train = np.arange(n_codes) * 3
    out = per_code_metrics(y, s, threshold, codes, train)
    rows = y.any(axis=1)
    ye, se, pred = y[rows], s[rows], s[rows] > threshold
    f1 = f1_score(ye, pred, average=None, zero_division=0)
    prec = precision_score(ye, pred, average=None, zero_division=0)
    rec = recall_score(ye, pred, average=None, zero_division=0)
    for i, row in enumerate(out["codes"]):
        assert (row["code"], row["train_count"], row["support"]) == (codes[i], train[i], ye[:, i].sum())
        if row["support"] == 0:  # outside the evaluation set
            assert np.isnan([row["f1"], row["precision"], row["recall"], row["ap"]]).all()
            continue
        assert row["f1"] == pytest.approx(f1[i]) and row["precision"] == pytest.approx(prec[i])
        assert row["recall"] == pytest.approx(rec[i])
        assert row["ap"] == pytest.approx(average_precision_score(ye[:, i], se[:, i]))
    assert out["f1_macro"] == pytest.approx(compute_metrics(y, s, threshold)["f1_macro"])
    evaluated = y.any(axis=0)
    assert out["n_codes"] == evaluated.sum() == out["n_rare"] + out["n_frequent"]
    assert out["rare_cutoff"] == np.median(train[evaluated])
    rare = evaluated & (train <= out["rare_cutoff"])
    assert out["f1_macro_rare"] == pytest.approx(np.mean([out["codes"][i]["f1"] for i in np.flatnonzero(rare)]))
    assert out["mean_ap_frequent"] == pytest.approx(
        np.mean([out["codes"][i]["ap"] for i in np.flatnonzero(evaluated & ~rare)]))
    fixed = per_code_metrics(y, s, threshold, codes, train, rare_cutoff=10**6)
    assert fixed["n_frequent"] == 0 and fixed["f1_macro_frequent"] is None and fixed["rare_cutoff"] == 10**6


def test_plot_report_writes_pngs(tmp_path):
    y, s, threshold = _random_case(6)
    per_code = per_code_metrics(y, s, threshold, [str(i) for i in range(y.shape[1])], np.arange(y.shape[1]) + 10)
    for scores, out in ((s, tmp_path / "one"), ({"a": s, "b": np.flip(s, axis=0)}, tmp_path / "two")):
        paths = plot_report(per_code, y, scores, out, title="test")
        assert [p.name for p in paths] == ["f1_vs_frequency.png", "pr_curve.png"]
        for p in paths:
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000


def test_rejects_bad_input():
    y = np.zeros((3, 4), dtype=bool)
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics(y, np.full((3, 4), np.nan), 0.5)
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(y, np.zeros((3, 5)), 0.5)
    with pytest.raises(ValueError, match="unknown metric"):
        paired_bootstrap(y, np.zeros((3, 4)), 0.5, np.zeros((3, 4)), 0.5, metric="f2")


def test_metric_subset():
    y, s, threshold = _random_case(1)
    full = compute_metrics(y, s, threshold)
    assert compute_metrics(y, s, threshold, metrics=["map", "f1_micro"]) == {"f1_micro": full["f1_micro"],
                                                                             "map": full["map"]}
