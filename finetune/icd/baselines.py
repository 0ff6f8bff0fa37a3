"""The TF-IDF + one-vs-rest logistic-regression baseline for ICD coding: the floor a fine-tuned encoder must clear.

Choices, and why (numbers: the synthetic benchmarks in BENCHMARKS.md, on `cmbert data synth` notes and two
random-text generators):
- Features: word 1-2-grams, lower-cased, sublinear tf (1 + log tf: a term repeated down a long note should not swamp
  the rest), idf, L2-normalized rows; the 200k most frequent terms seen in at least 2 notes. The token pattern keeps
  clinical tokens whole: decimals and dotted codes ("7.2", "i50.9", "38.93"), slashed units and abbreviations
  ("mg/dl", "s/p", "b.i.d"), numbers glued to units ("5mg"), and single characters ("2" in "type 2", "m", "f").
- Classifier: one logistic regression per code (codes differ in their positives; a rare code's fit is cheap), by
  liblinear. L1 by default: a code hangs on a handful of the 200k terms ("afib", "apixaban"), and L1 needs examples
  in proportion to the log of the number of irrelevant features where L2 needs them in proportion to the number
  (Ng 2004, "Feature selection, L1 vs. L2 regularization, and rotational invariance"), which matters for the many
  rare codes. On synthetic MIMIC notes L1 beat the best L2 on every metric: 2.2k train notes x 376 codes, micro-AP
  0.75 vs 0.61, P@5 0.77 vs 0.66, macro-AUC 0.979 vs 0.974; a `prepare`d ICD-9 set of 5.3k train notes x 183 codes,
  test micro-F1 0.946 vs 0.902, macro-F1 0.938 vs 0.817. It keeps ~50-100 non-zero weights per code, so a model for
  8k codes is megabytes. The price is fit time, ~1.5x the L2 fit. `penalty="l2"` is the alternative; it is solved in
  the dual (same optimum, 3-10x faster than the primal here) and wants a larger C (it kept improving up to 1000).
- C = 16 (for L1): unit-norm rows with thousands of non-zeros make each feature value small, so a useful weight is
  large; C = 4 -> 16 raised micro-AP 0.69 -> 0.75, C = 64 changed nothing.
- class_weight None: "balanced" per code puts every code's probabilities on its own scale, which hurts the one
  global threshold micro-F1 is tuned with; it stays an option for macro metrics.
- Constant codes (no positive, or only positives, in train) get no model: a constant score 0.0 or 1.0.
- Memory: L2 weights are dense (every feature seen in train gets one): 8k codes x 200k features would be 12.8 GB
  as float64. Each code keeps at most its `max_coefs_per_code` largest weights (by magnitude) in a float32 sparse
  [features, codes] matrix: 20k per code bounds 8k codes at ~1.3 GB. With L1 the cap rarely binds; with L2, dropping
  the tail of tiny weights did not hurt ranking metrics in the benchmarks (it shifts probabilities a little, which
  the threshold tuned on val absorbs). `max_coefs_per_code=None` keeps every weight.

Fitting is the slow part: each code's fit passes over the whole train matrix many times, so time grows with its
non-zeros x codes. Measured on one core: ~0.15 s (L1) / ~0.10 s (L2, C = 100) per code per million non-zeros. On
MIMIC-IV ICD-10 (~90k train notes x ~2k distinct terms each = ~180M non-zeros, ~7.9k codes) that is roughly 60 (L1)
/ 40 (L2) core-hours. `n_jobs > 1` fits codes in worker processes (not threads: scikit-learn's liblinear seeds one
global random generator, which threads would race on); the train matrix is memory-mapped to them read-only, and each
worker copies it into liblinear's own format (~16 bytes per non-zero, ~3 GB on MIMIC-IV) while it fits. The
vectorizer counts every distinct 1-2-gram before keeping the 200k most frequent: several GB on MIMIC-IV.

A saved model is a joblib file, i.e. a pickle: loading one runs code from the file. Only load files you made.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

import joblib
import numpy as np
import scipy.sparse as sp
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from cmbert.core.errors import UserError

# Word characters, optionally joined by "." or "/" to more word characters: "i50.9", "mg/dl", "s/p" stay one token; a
# sentence-final "." or a "/" between spaces does not join. Lower-casing happens before matching.
TOKEN_PATTERN = r"(?u)\b\w+(?:[./]\w+)*\b"
PREDICT_BATCH = 1024  # notes per transform in predict_scores: bounds the [batch, codes] logits in memory
FORMAT_VERSION = 1


@dataclass
class TfidfConfig:
    ngram_max: int = 2  # word n-grams 1..ngram_max: bigrams catch "heart failure", "type 2", "no evidence"
    max_features: int = 200_000  # the most frequent terms kept
    min_df: int = 2  # a term in one note only is noise (or a name that escaped de-identification)
    sublinear_tf: bool = True
    penalty: str = "l1"  # or "l2"; see the module docstring
    C: float = 16.0  # inverse regularization strength, tuned for L1 (L2 wants ~100-1000)
    class_weight: str | None = None  # or "balanced"
    max_iter: int = 1000  # liblinear's cap on solver iterations; fits that hit it are counted in `not_converged`
    tol: float = 1e-4
    max_coefs_per_code: int | None = 20_000  # weights kept per code (largest |w|); None keeps all
    n_jobs: int = 1  # worker processes for the per-code fits


def make_vectorizer(cfg: TfidfConfig) -> TfidfVectorizer:
    return TfidfVectorizer(
        lowercase=True, token_pattern=TOKEN_PATTERN, ngram_range=(1, cfg.ngram_max), max_features=cfg.max_features,
        min_df=cfg.min_df, sublinear_tf=cfg.sublinear_tf, dtype=np.float32,
    )


class TfidfLR:
    """A fitted baseline: the vectorizer, a sparse weight matrix and per-code intercepts."""

    def __init__(self, vectorizer: TfidfVectorizer, coef: sp.csr_matrix, intercept: np.ndarray, config: TfidfConfig,
                 not_converged: int = 0):
        self.vectorizer = vectorizer
        self.coef = coef  # float32 [features, codes], at most max_coefs_per_code non-zeros per column
        self.intercept = intercept  # float64 [codes]; -inf / +inf for codes with no / only positive train notes
        self.config = config
        self.not_converged = not_converged  # codes whose fit stopped at max_iter

    @property
    def num_codes(self) -> int:
        return self.coef.shape[1]

    def predict_scores(self, texts: Iterable[str]) -> np.ndarray:
        """Probabilities, float32 [notes, codes], in the column order of the label matrix the model was fit on."""
        texts = iter(texts)
        parts = []
        while batch := list(islice(texts, PREDICT_BATCH)):
            logits = (self.vectorizer.transform(batch) @ self.coef).toarray().astype(np.float64) + self.intercept
            parts.append(expit(logits).astype(np.float32))  # expit(-inf) = 0, expit(inf) = 1: constant codes
        return np.concatenate(parts) if parts else np.zeros((0, self.num_codes), np.float32)

    def save(self, path: str | Path) -> None:
        joblib.dump({"format": "tfidf_lr", "version": FORMAT_VERSION, "config": asdict(self.config),
                     "model": self}, path)

    @classmethod
    def load(cls, path: str | Path) -> TfidfLR:
        """A model written by `save`. The file is a pickle: only load files you made yourself."""
        payload = joblib.load(path)
        if not isinstance(payload, dict) or payload.get("format") != "tfidf_lr" or not isinstance(
                payload.get("model"), cls):
            raise UserError(f"{path}: not a TF-IDF baseline model written by TfidfLR.save")
        if payload["version"] != FORMAT_VERSION:
            raise UserError(f"{path}: model format version {payload['version']}, this code reads {FORMAT_VERSION}")
        return payload["model"]


def _penalty_arguments(penalty: str) -> dict:
    """scikit-learn 1.8 replaced LogisticRegression's `penalty` by `l1_ratio` (and warns on `penalty`); before 1.8,
    `l1_ratio` alone is ignored (with a warning) and the fit is silently L2."""
    if LogisticRegression().get_params()["penalty"] == "deprecated":
        return {"l1_ratio": 1.0 if penalty == "l1" else 0.0}
    return {"penalty": penalty}


def check_config(cfg: TfidfConfig) -> None:
    if cfg.penalty not in ("l1", "l2"):
        raise UserError(f"penalty must be 'l1' or 'l2', got {cfg.penalty!r}")
    if cfg.class_weight not in (None, "balanced"):
        raise UserError(f"class_weight must be None or 'balanced', got {cfg.class_weight!r}")
    if cfg.max_coefs_per_code is not None and cfg.max_coefs_per_code < 1:
        raise UserError("max_coefs_per_code must be >= 1 (or None to keep every weight)")
    if cfg.n_jobs < 1:
        raise UserError("n_jobs must be >= 1")


# One fitted code: (feature indices, their weights, intercept, hit max_iter).
CodeFit = tuple[np.ndarray, np.ndarray, float, bool]


def _fit_code(X: sp.csr_matrix, y: np.ndarray, cfg: TfidfConfig) -> CodeFit:
    empty = (np.zeros(0, np.int32), np.zeros(0, np.float32))
    positives = int(y.sum())
    if positives == 0:
        return *empty, -np.inf, False
    if positives == len(y):
        return *empty, np.inf, False
    # random_state: liblinear's solvers visit samples / features in a random order; fixed, a refit gives the same
    # weights. dual: only L2 has a dual form in liblinear (and it is the faster one there).
    clf = LogisticRegression(solver="liblinear", dual=cfg.penalty == "l2", C=cfg.C, class_weight=cfg.class_weight,
                             max_iter=cfg.max_iter, tol=cfg.tol, random_state=0, **_penalty_arguments(cfg.penalty))
    with warnings.catch_warnings():  # counted below instead: one line for all codes, not one warning per code
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    weights = clf.coef_[0]
    keep = np.flatnonzero(weights)
    k = cfg.max_coefs_per_code
    if k is not None and len(keep) > k:
        keep = np.sort(keep[np.argpartition(-np.abs(weights[keep]), k - 1)[:k]])
    return keep.astype(np.int32), weights[keep].astype(np.float32), float(clf.intercept_[0]), bool(
        clf.n_iter_.max() >= cfg.max_iter)


def _fit_codes(X: sp.csr_matrix, Y: np.ndarray, columns: np.ndarray, cfg: TfidfConfig) -> list[CodeFit]:
    """One worker's share of codes (a whole share per task: joblib hashes X each time it ships it to a worker)."""
    return [_fit_code(X, Y[:, j], cfg) for j in columns]


def fit_tfidf_lr(texts: Iterable[str], Y: np.ndarray, cfg: TfidfConfig | None = None) -> TfidfLR:
    """Fit the vectorizer on `texts` (iterated once) and one logistic regression per column of `Y` (bool [N, L])."""
    cfg = cfg if cfg is not None else TfidfConfig()
    check_config(cfg)
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.dtype != bool:
        raise ValueError(f"Y must be a bool [notes, codes] matrix, got {Y.dtype} {Y.shape}")
    vectorizer = make_vectorizer(cfg)
    X = vectorizer.fit_transform(texts)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"{X.shape[0]} texts but {Y.shape[0]} label rows")
    # The vectorizer's column renumbering leaves row indices unsorted, and LogisticRegression sorts them in place:
    # sort once here, since worker processes get X memory-mapped read-only.
    X.sum_duplicates()
    # Older scikit-learn keeps every pruned term in `stop_words_` (tens of millions of bigrams on MIMIC) and pickles it.
    if hasattr(vectorizer, "stop_words_"):
        del vectorizer.stop_words_
    Y = np.asfortranarray(Y)  # column slices contiguous
    num_codes = Y.shape[1]
    # Interleaved shares (codes j, j + n, j + 2n ...): labels are ordered by frequency, and frequent codes fit slowest.
    shares = [np.arange(start, num_codes, cfg.n_jobs) for start in range(min(cfg.n_jobs, num_codes))]
    if cfg.n_jobs == 1:
        results = [_fit_codes(X, Y, shares[0], cfg)] if shares else []
    else:
        results = joblib.Parallel(n_jobs=cfg.n_jobs, backend="loky")(
            joblib.delayed(_fit_codes)(X, Y, share, cfg) for share in shares)
    fits: list[CodeFit | None] = [None] * num_codes
    for share, share_fits in zip(shares, results, strict=True):
        for j, fit in zip(share, share_fits, strict=True):
            fits[j] = fit
    lengths = np.array([len(fit[0]) for fit in fits], np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    coef = sp.csc_matrix(
        (np.concatenate([fit[1] for fit in fits]) if fits else np.zeros(0, np.float32),
         np.concatenate([fit[0] for fit in fits]) if fits else np.zeros(0, np.int32), indptr),
        shape=(X.shape[1], num_codes), dtype=np.float32,
    ).tocsr()
    intercept = np.array([fit[2] for fit in fits], np.float64)
    return TfidfLR(vectorizer, coef, intercept, cfg, not_converged=sum(fit[3] for fit in fits))


def _texts(examples: Iterable) -> Iterator[str]:
    return (example.text for example in examples)


def run_tfidf_baseline(dataset_dir: str | Path, cfg: TfidfConfig | None = None) -> dict:
    """Fit on the dataset's train split and score val and test: {"val": float32 [n_val, L], "test": float32
    [n_test, L], "seconds": fit time (vectorizer + classifiers), "model": the TfidfLR}. Rows follow the split files'
    order and columns labels.json's, as `cmbert.finetune.icd.data.label_matrix` lays out the targets."""
    from cmbert.data.icd_dataset import label_matrix, load_labels, read_split

    labels = load_labels(dataset_dir)
    train = list(read_split(dataset_dir, "train"))
    start = time.perf_counter()
    model = fit_tfidf_lr(_texts(train), label_matrix(train, labels), cfg)
    seconds = time.perf_counter() - start
    del train
    return {"val": model.predict_scores(_texts(read_split(dataset_dir, "val"))),
            "test": model.predict_scores(_texts(read_split(dataset_dir, "test"))),
            "seconds": seconds, "model": model}
