"""The TF-IDF + logistic-regression ICD baseline on tiny synthetic notes whose words decide their codes: it ranks true
codes first, handles codes with no or only positive train notes, round-trips through save/load, and runs end to end
on a hand-written dataset folder in the format of docs/icd.md."""

from __future__ import annotations

import gzip
import json

import joblib
import numpy as np
import pytest

from cmbert.finetune.icd.baselines import TfidfConfig, TfidfLR, fit_tfidf_lr, make_vectorizer, run_tfidf_baseline

# Each code is named by its own words; every note also carries shared filler, so only the trigger words separate codes.
TRIGGERS = {
    "I50.9": ["chf", "heart failure", "bnp elevated"],
    "E11.9": ["diabetes", "hba1c 8.1", "metformin"],
    "N17.9": ["aki", "creatinine rising", "acute kidney injury"],
    "J18.9": ["pneumonia", "consolidation", "ceftriaxone"],
    "I48.91": ["afib", "atrial fibrillation", "apixaban"],
    "0DTJ4ZZ": ["appendectomy", "laparoscopic", "appendix removed"],
}
CODES = list(TRIGGERS)
FILLER = "patient admitted stable vitals discharged home follow up with pcp labs reviewed".split()


def make_notes(n: int, seed: int, filler: int = 30, vocabulary: list[str] = FILLER) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    texts, Y = [], np.zeros((n, len(CODES)), bool)
    for i in range(n):
        have = rng.choice(len(CODES), size=rng.integers(1, 4), replace=False)
        Y[i, have] = True
        words = list(rng.choice(vocabulary, size=filler))
        for j in have:
            words += list(rng.choice(TRIGGERS[CODES[j]], size=2))
        rng.shuffle(words)
        texts.append(" ".join(words))
    return texts, Y


def precision_at_1(scores: np.ndarray, Y: np.ndarray) -> float:
    return float(Y[np.arange(len(Y)), scores.argmax(1)].mean())


@pytest.fixture(scope="module")
def fitted():
    texts, Y = make_notes(160, seed=0)
    # Two constant columns: a code no train note has, and one every train note has.
    Y = np.concatenate([Y, np.zeros((len(Y), 1), bool), np.ones((len(Y), 1), bool)], axis=1)
    return fit_tfidf_lr(texts, Y, TfidfConfig()), texts, Y


def test_ranks_true_codes_first(fitted):
    model, _, _ = fitted
    texts, Y = make_notes(40, seed=1)
    scores = model.predict_scores(texts)
    assert scores.dtype == np.float32 and scores.shape == (40, len(CODES) + 2)
    learned = scores[:, : len(CODES)]
    assert precision_at_1(learned, Y) == 1.0
    # Every true code above every false one, note by note (ranking AUC 1 per note).
    assert all(learned[i][Y[i]].min() > learned[i][~Y[i]].max() for i in range(len(Y)))
    assert model.not_converged == 0


def test_constant_codes_get_constant_scores(fitted):
    model, texts, _ = fitted
    scores = model.predict_scores(texts[:10] + ["an unrelated note about nothing"])
    assert (scores[:, -2] == 0.0).all() and (scores[:, -1] == 1.0).all()
    assert np.isfinite(scores).all()
    assert model.coef[:, -2:].nnz == 0


def test_predict_accepts_any_iterable_and_empty_input(fitted):
    model, texts, _ = fitted
    np.testing.assert_array_equal(model.predict_scores(iter(texts[:5])), model.predict_scores(texts[:5]))
    assert model.predict_scores([]).shape == (0, model.num_codes)


def test_save_load_round_trip(fitted, tmp_path):
    model, texts, _ = fitted
    model.save(tmp_path / "model.joblib")
    loaded = TfidfLR.load(tmp_path / "model.joblib")
    np.testing.assert_array_equal(loaded.predict_scores(texts), model.predict_scores(texts))
    assert loaded.config == model.config
    joblib.dump({"something": "else"}, tmp_path / "other.joblib")
    with pytest.raises(ValueError, match="not a TF-IDF baseline model"):
        TfidfLR.load(tmp_path / "other.joblib")


def test_l1_is_sparse_and_l2_ranks_too():
    texts, Y = make_notes(120, seed=2)
    test_texts, test_Y = make_notes(30, seed=3)
    l1 = fit_tfidf_lr(texts, Y, TfidfConfig(penalty="l1", max_coefs_per_code=None))
    l2 = fit_tfidf_lr(texts, Y, TfidfConfig(penalty="l2", C=100.0, max_coefs_per_code=None))
    num_features = l1.coef.shape[0]
    assert l1.coef.nnz < 0.2 * num_features * len(CODES)  # the penalty really is L1 on this scikit-learn
    assert l2.coef.nnz > 0.9 * num_features * len(CODES)  # L2 weighs every feature seen in train
    for model in (l1, l2):
        assert precision_at_1(model.predict_scores(test_texts), test_Y) == 1.0


def test_pruning_keeps_the_largest_weights():
    texts, Y = make_notes(120, seed=2)
    full = fit_tfidf_lr(texts, Y, TfidfConfig(penalty="l2", C=100.0, max_coefs_per_code=None))
    pruned = fit_tfidf_lr(texts, Y, TfidfConfig(penalty="l2", C=100.0, max_coefs_per_code=5))
    assert (np.diff(pruned.coef.tocsc().indptr) == 5).all()
    dense_full, dense_pruned = full.coef.toarray(), pruned.coef.toarray()
    for j in range(len(CODES)):
        kept = dense_pruned[:, j] != 0
        np.testing.assert_array_equal(dense_pruned[kept, j], dense_full[kept, j])
        assert np.abs(dense_full[~kept, j]).max() <= np.abs(dense_full[kept, j]).min()
    # The trigger words carry the weight: five per code still rank every code right.
    test_texts, test_Y = make_notes(30, seed=3)
    assert precision_at_1(pruned.predict_scores(test_texts), test_Y) == 1.0


def test_parallel_fit_matches_serial():
    # Big enough (> 1 MB of features) that joblib memory-maps the train matrix to the workers, read-only.
    texts, Y = make_notes(1000, seed=4, filler=300, vocabulary=[f"w{i}" for i in range(3000)])
    serial = fit_tfidf_lr(texts, Y, TfidfConfig(ngram_max=1, n_jobs=1))
    parallel = fit_tfidf_lr(texts, Y, TfidfConfig(ngram_max=1, n_jobs=2))
    np.testing.assert_array_equal(parallel.predict_scores(texts), serial.predict_scores(texts))


def test_clinical_tokens_stay_whole():
    vocabulary = make_vectorizer(TfidfConfig(ngram_max=1, min_df=1)).fit(
        ["HbA1c 7.2% on 5mg; dx I50.9 and 38.93, s/p CABG, Cr 1.4 mg/dL, type 2 DM. End."]).vocabulary_
    for token in ("hba1c", "7.2", "5mg", "i50.9", "38.93", "s/p", "mg/dl", "2", "dm", "end"):
        assert token in vocabulary, token
    assert "end." not in vocabulary and "7" not in vocabulary


@pytest.mark.parametrize("bad", [dict(penalty="elasticnet"), dict(class_weight="auto"), dict(max_coefs_per_code=0),
                                 dict(n_jobs=0)])
def test_bad_configs_are_errors(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        fit_tfidf_lr(["aa bb", "aa cc"], np.array([[True], [False]]), TfidfConfig(**bad))


def test_bad_label_matrices_are_errors():
    with pytest.raises(ValueError, match="bool"):
        fit_tfidf_lr(["a b", "a c"], np.ones((2, 1), np.int64))
    with pytest.raises(ValueError, match="2 texts but 3 label rows"):
        fit_tfidf_lr(["a b", "a c"], np.ones((3, 1), bool))


def test_no_codes_at_all():
    model = fit_tfidf_lr(["aa bb", "aa cc"], np.zeros((2, 0), bool))
    assert model.predict_scores(["aa"]).shape == (1, 0)


# ------------------------------------------------------------------------------------------------------ end to end


def write_dataset(folder, splits: dict[str, tuple[list[str], np.ndarray]]):
    """A dataset folder as `cmbert finetune icd prepare` writes it (only the files the readers open)."""
    folder.mkdir()
    train_counts = splits["train"][1].sum(0)
    counts = sum(Y.sum(0) for _, Y in splits.values())
    labels = {"version": 10, "min_count": 1, "top_k": None, "preprocess": "none", "max_words": None,
              "codes": [{"code": code, "raw": code.replace(".", ""), "kind": "procedure" if code == "0DTJ4ZZ"
                         else "diagnosis", "title": f"title of {code}", "count": int(counts[j]),
                         "train_count": int(train_counts[j])} for j, code in enumerate(CODES)]}
    (folder / "labels.json").write_text(json.dumps(labels))
    for split, (texts, Y) in splits.items():
        with gzip.open(folder / f"{split}.jsonl.gz", "wt", encoding="utf-8") as file:
            for i, (text, row) in enumerate(zip(texts, Y, strict=True)):
                record = {"note_id": f"{split}-{i}", "subject_id": 1000 + i, "hadm_id": 2000 + i, "text": text,
                          "codes": [CODES[j] for j in np.flatnonzero(row)]}
                file.write(json.dumps(record) + "\n")


def test_run_tfidf_baseline_on_a_dataset_folder(tmp_path):
    splits = {"train": make_notes(120, seed=5), "val": make_notes(20, seed=6), "test": make_notes(25, seed=7)}
    write_dataset(tmp_path / "icd10", splits)
    result = run_tfidf_baseline(tmp_path / "icd10", TfidfConfig())
    assert set(result) >= {"val", "test", "seconds"}
    assert result["val"].shape == (20, len(CODES)) and result["test"].shape == (25, len(CODES))
    assert result["val"].dtype == result["test"].dtype == np.float32
    assert result["seconds"] > 0 and isinstance(result["model"], TfidfLR)
    # Rows in split-file order, columns in labels.json order: the true codes of each note come first.
    for split in ("val", "test"):
        assert precision_at_1(result[split], splits[split][1]) == 1.0
