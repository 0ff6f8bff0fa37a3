"""finetune/trajectory/metrics.py: P@k, recall@k, AP@K, AR@K and NDCG@k by hand (arithmetic in the comments) and
against a one-sample-at-a-time loop of the docstring formulas, the lower-index tie rule on both ranking paths (full
sort, partition), cut-offs beyond C, many blocks against one, auprc_micro against scikit-learn, the paired bootstrap,
the ValueErrors and the comparison PNG."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from cmbert.finetune.trajectory import metrics as M
from cmbert.finetune.trajectory.metrics import (
    AVERAGE_KS,
    TOP_KS,
    paired_bootstrap,
    per_sample_metrics,
    plot_comparison,
    ranking_metrics,
)

TOL = 1e-12


def _one(scores: list[float], true: set[int], names: list[str]) -> dict[str, float]:
    """Per-sample values of one sample."""
    y = np.zeros((1, len(scores)), dtype=bool)
    y[0, sorted(true)] = True
    return {name: float(v[0]) for name, v in per_sample_metrics(y, np.asarray([scores]), names).items()}


def _loop_metrics(y: np.ndarray, s: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """The module docstring's formulas, one sample and one rank at a time."""
    out = {name: [] for name in names}
    for yr, sr in zip(y, s, strict=True):
        c = len(sr)
        rel = [int(yr[j]) for j in sorted(range(c), key=lambda j: (-sr[j], j))]
        n_true = sum(rel)
        for name in names:
            kind, k = name.split("@")
            k = int(k)
            kk = min(k, c)
            if kind == "precision":
                value = sum(rel[:kk]) / kk
            elif kind == "recall":
                value = sum(rel[:kk]) / n_true
            elif kind == "map":
                value = sum(sum(rel[:i]) / i * rel[i - 1] for i in range(1, kk + 1)) / min(k, n_true)
            elif kind == "mar":
                value = sum(sum(rel[:i]) / n_true for i in range(1, kk + 1)) / kk
            else:
                dcg = sum(rel[i - 1] / math.log2(i + 1) for i in range(1, kk + 1))
                value = dcg / sum(1 / math.log2(i + 1) for i in range(1, min(k, n_true) + 1))
            out[name].append(value)
    return {name: np.asarray(v) for name, v in out.items()}


def _random_case(rng, n: int, c: int, n_levels: int | None = None):
    """Random true sets (1..5 categories per sample) and scores; n_levels: integer scores with many ties."""
    y = np.zeros((n, c), dtype=bool)
    for i in range(n):
        y[i, rng.choice(c, size=rng.integers(1, min(5, c) + 1), replace=False)] = True
    s = rng.integers(0, n_levels, size=(n, c)).astype(np.float64) if n_levels else rng.normal(size=(n, c))
    return y, s + 1.5 * y * rng.random((n, c))  # some signal, so the metrics are not all near 0


ALL_NAMES = [f"{kind}@{k}" for kind in ("precision", "recall", "map", "mar", "ndcg") for k in (1, 2, 3, 5, 7, 20, 60)]


# ------------------------------------------------------------------------------------------------------ by hand


def test_hand_computed_ranking():
    # scores rank the columns 1, 3, 2, 0 (call them a, b, c, d); Y = {a, c} = {1, 2}: rel = 1, 0, 1, 0; |Y| = 2
    got = _one([0.1, 0.9, 0.4, 0.7], {1, 2}, [
        "precision@1", "precision@2", "precision@3", "precision@4", "recall@1", "recall@2", "recall@3",
        "map@1", "map@2", "map@4", "mar@2", "mar@3", "mar@4", "ndcg@1", "ndcg@2", "ndcg@4"])
    want = {
        "precision@1": 1.0,  # 1 / 1
        "precision@2": 0.5,  # (1 + 0) / 2
        "precision@3": 2 / 3,  # (1 + 0 + 1) / 3
        "precision@4": 0.5,  # 2 / 4
        "recall@1": 0.5,  # 1 / |Y|
        "recall@2": 0.5,  # 1 / 2
        "recall@3": 1.0,  # 2 / 2
        "map@1": 1.0,  # (1 / min(1, 2)) (P@1 . 1) = 1
        "map@2": 0.5,  # (1 / min(2, 2)) (P@1 . 1 + P@2 . 0) = (1/2)(1)
        "map@4": 5 / 6,  # (1/2)(P@1 + P@3) = (1/2)(1 + 2/3)
        "mar@2": 0.5,  # (1/2)(recall@1 + recall@2) = (1/2)(1/2 + 1/2)
        "mar@3": 2 / 3,  # (1/3)(1/2 + 1/2 + 1)
        "mar@4": 0.75,  # (1/4)(1/2 + 1/2 + 1 + 1)
        "ndcg@1": 1.0,  # (1 / log2 2) / (1 / log2 2)
        "ndcg@2": 1 / (1 + 1 / math.log2(3)),  # DCG = 1 / log2 2; IDCG = 1 / log2 2 + 1 / log2 3
        "ndcg@4": (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)),  # hits at ranks 1 and 3
    }
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=TOL), name


def test_cutoffs_beyond_the_categories_use_the_full_ranking():
    # the same sample (C = 4) with k = 10: the sums stop at k' = min(10, 4) = 4
    got = _one([0.1, 0.9, 0.4, 0.7], {1, 2}, ["precision@10", "recall@10", "map@10", "mar@10", "ndcg@10"])
    assert got["precision@10"] == pytest.approx(2 / 4, abs=TOL)  # 2 hits / k' = 4, not / 10
    assert got["recall@10"] == pytest.approx(1.0, abs=TOL)
    assert got["map@10"] == pytest.approx((1 + 2 / 3) / 2, abs=TOL)  # 1 / min(10, |Y| = 2)
    assert got["mar@10"] == pytest.approx((0.5 + 0.5 + 1 + 1) / 4, abs=TOL)  # the mean over k' = 4 ranks
    assert got["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)), abs=TOL)


def test_ties_follow_the_lower_index():
    # all scores tie: the ranking is 0, 1, 2, 3; Y = {2} is found at rank 3
    got = _one([0.0, 0.0, 0.0, 0.0], {2}, ["precision@3", "recall@2", "recall@3", "map@4", "mar@4"])
    assert got["precision@3"] == pytest.approx(1 / 3, abs=TOL)
    assert got["recall@2"] == 0.0
    assert got["recall@3"] == 1.0
    assert got["map@4"] == pytest.approx(1 / 3, abs=TOL)  # (1/1)(P@3 . 1)
    assert got["mar@4"] == pytest.approx((0 + 0 + 1 + 1) / 4, abs=TOL)
    # counts 1, 2, 2, 0, 2 (a count baseline): ranking 1, 2, 4, 0, 3; Y = {4} at rank 3, Y = {2} at rank 2
    assert _one([1, 2, 2, 0, 2], {4}, ["map@5"])["map@5"] == pytest.approx(1 / 3, abs=TOL)
    assert _one([1, 2, 2, 0, 2], {2}, ["map@5"])["map@5"] == pytest.approx(1 / 2, abs=TOL)
    # -0.0 ties with 0.0: the lower index (0) first
    assert _one([-0.0, 0.0], {0}, ["precision@1"])["precision@1"] == 1.0


def test_perfect_ranking():
    # C = 30, Y = {5, 17} scored highest: recall@20 = 1, P@20 = 2/20, AP = 1, NDCG = 1,
    # AR@20 = (1/20)(recall@1 + recall@2 + ... + recall@20) = (1/20)(1/2 + 19 . 1) = 0.975, not 1
    scores = [0.0] * 30
    scores[5], scores[17] = 2.0, 1.0
    got = _one(scores, {5, 17}, ["recall@20", "precision@20", "map@20", "mar@20", "ndcg@20", "ndcg@1", "mar@1"])
    assert got["recall@20"] == 1.0
    assert got["precision@20"] == pytest.approx(0.1, abs=TOL)
    assert got["map@20"] == pytest.approx(1.0, abs=TOL)
    assert got["mar@20"] == pytest.approx(19.5 / 20, abs=TOL)
    assert got["ndcg@20"] == pytest.approx(1.0, abs=TOL)
    assert got["ndcg@1"] == pytest.approx(1.0, abs=TOL)
    assert got["mar@1"] == pytest.approx(0.5, abs=TOL)  # AR@1 = recall@1


# ------------------------------------------------------------------------------------------------------ against a loop


@pytest.mark.parametrize("n_levels", [None, 3])
@pytest.mark.parametrize("c", [4, 15, 80])
def test_matches_the_loop(c, n_levels):
    y, s = _random_case(np.random.default_rng(c), 40, c, n_levels)
    got = per_sample_metrics(y, s, ALL_NAMES)
    want = _loop_metrics(y, s, ALL_NAMES)
    for name in ALL_NAMES:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=TOL, err_msg=name)
        assert (got[name] >= 0).all() and (got[name] <= 1 + TOL).all()
    assert (got["mar@20"] <= got["recall@20"] + TOL).all()  # AR@K <= recall@K


@pytest.mark.parametrize("n_levels", [None, 2, 4])
def test_partition_path_equals_full_sort(monkeypatch, n_levels):
    # integer scores put many ties at the partition boundary: they must still be taken in index order
    y, s = _random_case(np.random.default_rng(7), 30, 120, n_levels)
    for m in (1, 5, 60, 119, 120):
        full = M._top_columns(s, m)
        monkeypatch.setattr(M, "_FULL_SORT_MAX", 0)
        part = M._top_columns(s, m)
        monkeypatch.setattr(M, "_FULL_SORT_MAX", 2048)
        want = np.asarray([sorted(range(s.shape[1]), key=lambda j, r=r: (-s[r, j], j))[:m] for r in range(len(s))])
        np.testing.assert_array_equal(full, want)
        np.testing.assert_array_equal(part, want)
    monkeypatch.setattr(M, "_FULL_SORT_MAX", 0)
    got = per_sample_metrics(y, s, ALL_NAMES)
    want = _loop_metrics(y, s, ALL_NAMES)
    for name in ALL_NAMES:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=TOL, err_msg=name)


def test_many_blocks_equal_one_block(monkeypatch):
    y, s = _random_case(np.random.default_rng(3), 53, 70, 5)
    one = ranking_metrics(y, s)
    monkeypatch.setattr(M, "_BLOCK_CELLS", 150)  # 2 rows per block, a short last block
    monkeypatch.setattr(M, "_FULL_SORT_MAX", 0)
    many = ranking_metrics(y, s)
    assert many.keys() == one.keys()
    for name in one:
        assert many[name] == pytest.approx(one[name], abs=TOL), name


def test_ranking_metrics_keys_and_types():
    y, s = _random_case(np.random.default_rng(0), 25, 90)
    out = ranking_metrics(y, s)
    want = [f"{kind}@{k}" for k in TOP_KS for kind in ("recall", "precision", "ndcg")]
    want += [f"{kind}@{k}" for k in AVERAGE_KS for kind in ("map", "mar")] + ["auprc_micro", "n_samples"]
    assert list(out) == want
    assert out["n_samples"] == 25 and type(out["n_samples"]) is int
    per = per_sample_metrics(y, s, want[:-2])
    for name in want[:-1]:
        assert type(out[name]) is float and 0 <= out[name] <= 1
        if name in per:
            assert out[name] == pytest.approx(per[name].mean(), abs=TOL)
    assert list(ranking_metrics(y, s, top_ks=(5,), average_ks=())) == ["recall@5", "precision@5", "ndcg@5",
                                                                       "auprc_micro", "n_samples"]


# ------------------------------------------------------------------------------------------------------ auprc_micro


@pytest.mark.parametrize("kind", ["normal", "ties", "float32", "counts"])
def test_auprc_micro_equals_sklearn(monkeypatch, kind):
    rng = np.random.default_rng(11)
    y, s = _random_case(rng, 60, 40, 6 if kind in ("ties", "counts") else None)
    if kind == "float32":
        s = s.astype(np.float32)
    if kind == "counts":
        s = rng.integers(0, 5, size=y.shape) + 2 * y  # int scores, heavy ties
    want = average_precision_score(y.ravel(), s.ravel())
    assert ranking_metrics(y, s)["auprc_micro"] == pytest.approx(want, abs=TOL)
    monkeypatch.setattr(M, "_BLOCK_CELLS", 1)
    assert ranking_metrics(y, s)["auprc_micro"] == pytest.approx(want, abs=TOL)


# ------------------------------------------------------------------------------------------------------ bootstrap


def test_paired_bootstrap_identical_systems():
    y, s = _random_case(np.random.default_rng(1), 80, 50)
    out = paired_bootstrap(y, s, s.copy(), metric="mar@20", n_resamples=200)
    assert out["delta"] == 0.0 and out["p_value"] == 1.0 and out["ci95"] == [0.0, 0.0]
    assert out["a"] == out["b"] == pytest.approx(ranking_metrics(y, s)["mar@20"], abs=TOL)
    assert out["metric"] == "mar@20" and out["n_resamples"] == 200


def test_paired_bootstrap_better_system():
    rng = np.random.default_rng(2)
    y, _ = _random_case(rng, 300, 60)
    good = y + 0.8 * rng.random(y.shape)  # true categories usually on top
    noise = rng.random(y.shape)
    out = paired_bootstrap(y, good, noise, metric="recall@20", n_resamples=500, seed=4)
    assert out["delta"] == pytest.approx(out["a"] - out["b"], abs=TOL) and out["delta"] > 0.3
    assert 0 < out["ci95"][0] <= out["delta"] <= out["ci95"][1]
    assert out["p_value"] < 0.01
    assert paired_bootstrap(y, good, noise, metric="recall@20", n_resamples=500, seed=4) == out  # seeded
    reverse = paired_bootstrap(y, noise, good, metric="recall@20", n_resamples=500, seed=4)
    assert reverse["delta"] == pytest.approx(-out["delta"], abs=TOL) and reverse["ci95"][1] < 0


# ------------------------------------------------------------------------------------------------------ errors, plot


def test_value_errors():
    y, s = _random_case(np.random.default_rng(5), 6, 8)
    empty = y.copy()
    empty[3] = False
    with pytest.raises(ValueError, match="empty true set"):
        ranking_metrics(empty, s)
    for bad in (np.nan, np.inf, -np.inf):
        t = s.copy()
        t[2, 5] = bad
        with pytest.raises(ValueError, match="finite"):
            ranking_metrics(y, t)
    with pytest.raises(ValueError, match=r"\(6, 8\) and \(6, 7\)"):
        ranking_metrics(y, s[:, :7])
    with pytest.raises(ValueError, match="2-D"):
        per_sample_metrics(y[0], s[0], ["recall@2"])
    with pytest.raises(ValueError, match="same shape"):
        paired_bootstrap(y, s, s[:5])
    with pytest.raises(ValueError, match="unknown metric"):
        per_sample_metrics(y, s, ["recall@0"])
    with pytest.raises(ValueError, match="unknown metric"):
        paired_bootstrap(y, s, s, metric="auprc_micro")


def test_plot_comparison(tmp_path):
    results = {"frequency": {"recall@20": 0.41, "mar@20": 0.22, "map@20": 0.18, "ndcg@20": 0.30},
               "encoder": {"recall@20": 0.55, "mar@20": 0.31, "map@20": 0.27, "ndcg@20": 0.41}}
    path = plot_comparison(results, tmp_path / "plots" / "comparison.png", title="next visit")
    assert path == tmp_path / "plots" / "comparison.png"
    assert path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="lacks"):
        plot_comparison(results, tmp_path / "x.png", metrics=("recall@30",))
