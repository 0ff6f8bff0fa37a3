"""Scores of a summary against the reference Brief Hospital Course: ROUGE (lexical) and BERTScore (semantic).

ROUGE-1/2/L/Lsum are Google's `rouge-score` (the ROUGE-1.5.5 reimplementation summarisation papers report) with its
Porter stemmer, through a tokenizer that caches stems (`RougeTokenizer`: the same tokens as `use_stemmer=True`).
ROUGE-1/2 are its `RougeScorer`; its pure-Python LCS tables made ROUGE-L/Lsum ~0.35 s per note-length pair (hours on
MIMIC-IV's test split), so `lcs_scores` / `summary_lcs_scores` compute the same algorithm faster (the tests check
all four numbers equal RougeScorer(use_stemmer=True)'s to 1e-12). ROUGE-Lsum reads newline-separated sentences: a
reference and a summary are laid out one unit per line by `cmbert.finetune.bhc.sentences.lines_for_lsum` first.
`ngram_rouge` is the fast n-gram ROUGE on pre-tokenized text that the greedy oracle and the scorer's labels use
(thousands of calls per note; same tokens and clipped counts as rouge-score's ROUGE-N).

BERTScore follows Zhang et al. 2020 and the `bert_score` package (0.3.13) step for step, with any local encoder
folder: each text is encoded ([CLS] text [SEP]), every token's hidden state at the chosen layer is L2-normalised,
each candidate token is matched to its most similar reference token (precision) and each reference token to its
most similar candidate token (recall), and the matches are averaged with weights that are 0 for [CLS] and [SEP] and
1 (or the token's idf over the references, `idf=True`; bert_score's default is no idf) otherwise. As in bert_score,
[CLS] and [SEP] still count as tokens to be matched *to*; only their own weight is 0. F = 2PR / (P + R).

Choices where bert_score has none for our model:
- Layer. bert_score picks a tuned layer per known model (e.g. 9 of 12 for roberta-base) by correlation with human
  judgements; nothing like that exists for our encoder, so the default is the last layer (`layer=None`). `layer=k`
  keeps the first k layers and the final LayerNorm, exactly what bert_score's `num_layers=k` does to a model with a
  `.layers` list such as ModernBERT, so the two agree for every k (tested for the last layer and one below).
- Long texts. bert_score truncates at the tokenizer's `model_max_length` (512 for BERT, most of a BHC lost). Here a
  text is tokenized whole and read in chunks of the model's context ([CLS] piece [SEP] each, `cmbert.core.notes`),
  and the token states of all chunks are concatenated: each token is matched against the whole other text. For a
  text that fits one chunk this is bert_score's computation exactly.
- Padding. bert_score pads a batch and zeroes the similarities at padded positions before its max, so a token whose
  every similarity is negative scores 0 inside a padded batch and its true maximum alone: a batch-dependent value.
  Pairs are matched one at a time here (the true maximum), which equals bert_score run with batch_size=1.
ModernBERT folders run on our encoder's unpadded path (`cmbert.modeling.ModernBertModel`); other encoders go through
`cmbert.core.embeddings.load_encoder`'s padded wrapper and support only the last layer.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from cmbert.core.errors import UserError

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


class RougeTokenizer:
    """rouge-score's default tokenizer with `use_stemmer=True` (lower-case, runs of [a-z0-9], Porter stems of words
    longer than 3 characters), with the stems cached."""

    def __init__(self):
        from nltk.stem import porter
        from rouge_score import tokenize

        stemmer = porter.PorterStemmer()
        self._tokenize = tokenize.tokenize
        self._stemmer = type("CachedStemmer", (), {"stem": staticmethod(lru_cache(maxsize=1 << 18)(stemmer.stem))})()

    def tokenize(self, text: str) -> list[str]:
        return self._tokenize(text, self._stemmer)


@lru_cache(maxsize=1)
def rouge_tokenizer() -> RougeTokenizer:
    return RougeTokenizer()


MIN_ITEMS_PER_WORKER = 100  # fewer notes per process: starting it (imports, pickling) costs more than it saves


def parallel_map(function, items: Sequence, workers: int = 1) -> list:
    """[function(item) for item in items], spread over up to `workers` processes when each gets at least
    MIN_ITEMS_PER_WORKER items. ROUGE and the greedy oracle are pure Python (~0.02 s and ~0.06 s per note: 10 and 27
    minutes for MIMIC-IV's ~27k test notes on one core). Processes are spawned, not forked: the caller may hold
    torch's thread pools, which a fork can deadlock. `function` must be a module-level function (pickled by name)."""
    workers = max(1, min(workers, len(items) // MIN_ITEMS_PER_WORKER))
    if workers == 1:
        return [function(item) for item in items]
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.map(function, items, chunksize=-(-len(items) // (4 * workers)))


def rouge_scores(targets: Sequence[str], predictions: Sequence[str],
                 workers: int = 1) -> list[dict[str, dict[str, float]]]:
    """Per pair: {rouge1|rouge2|rougeL|rougeLsum: {precision, recall, f}} (Lsum on one unit per line).

    ROUGE-1/2 come from rouge-score's `RougeScorer`; ROUGE-L and ROUGE-Lsum from `lcs_scores`, rouge-score's own
    algorithm made fast (see there) and tested equal to it. With `workers` > 1 the pairs are scored in processes
    (`parallel_map`): the same numbers."""
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
    return parallel_map(_rouge_pair, list(zip(targets, predictions, strict=True)), workers)


@lru_cache(maxsize=1)
def _rouge12_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2"], tokenizer=rouge_tokenizer())


# LCS of sentence pairs, shared by the pairs one process scores (references repeat for every system, systems share
# sentences); emptied past LSUM_CACHE_ENTRIES so memory stays bounded on MIMIC-IV's test split.
_LSUM_CACHE: dict = {}
LSUM_CACHE_ENTRIES = 200_000


def _rouge_pair(pair: tuple[str, str]) -> dict[str, dict[str, float]]:
    from cmbert.finetune.bhc.sentences import lines_for_lsum

    target, prediction = pair
    tokenize = rouge_tokenizer().tokenize
    if len(_LSUM_CACHE) > LSUM_CACHE_ENTRIES:
        _LSUM_CACHE.clear()
    scores = {name: (s.precision, s.recall, s.fmeasure) for name, s in _rouge12_scorer().score(target,
                                                                                               prediction).items()}
    scores["rougeL"] = lcs_scores(tokenize(target), tokenize(prediction))
    scores["rougeLsum"] = summary_lcs_scores([tokenize(line) for line in lines_for_lsum(target).split("\n")],
                                             [tokenize(line) for line in lines_for_lsum(prediction).split("\n")],
                                             _LSUM_CACHE)
    return {name: {"precision": p, "recall": r, "f": f} for name, (p, r, f) in scores.items()}


def _prf(hits: int, n_candidate: int, n_reference: int) -> tuple[float, float, float]:
    precision, recall = hits / n_candidate, hits / n_reference
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0)


def lcs_scores(reference: list[str], candidate: list[str]) -> tuple[float, float, float]:
    """ROUGE-L (P, R, F) as rouge-score computes it. The LCS table is built a row at a time with numpy: row i is
    the running maximum over j of (row i-1 at j-1, plus 1, where the tokens match; row i-1 at j otherwise), which is
    the textbook recurrence (a match never loses to its neighbours, as LCS values of adjacent cells differ by <= 1);
    a 2,000 x 1,000-token pair takes milliseconds instead of seconds."""
    if not reference or not candidate:
        return 0.0, 0.0, 0.0
    ids: dict[str, int] = {}
    ref = np.asarray([ids.setdefault(t, len(ids)) for t in reference])
    can = np.asarray([ids.setdefault(t, len(ids)) for t in candidate])
    row = np.zeros(len(can) + 1, dtype=np.int64)
    for token in ref:
        step = np.where(can == token, row[:-1] + 1, row[1:])
        row[1:] = np.maximum.accumulate(step)
    return _prf(int(row[-1]), len(candidate), len(reference))


def _lcs_indices(ref: tuple[str, ...], can: tuple[str, ...]) -> tuple[int, ...]:
    """Indices into `ref` of rouge-score's LCS of (ref, can): the same table and the same backtracking."""
    rows, cols = len(ref), len(can)
    table = [[0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(1, rows + 1):
        above, current, r = table[i - 1], table[i], ref[i - 1]
        for j in range(1, cols + 1):
            current[j] = above[j - 1] + 1 if r == can[j - 1] else max(above[j], current[j - 1])
    i, j, out = rows, cols, []
    while i > 0 and j > 0:
        if ref[i - 1] == can[j - 1]:
            out.append(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return tuple(reversed(out))


def summary_lcs_scores(reference: list[list[str]], candidate: list[list[str]], cache: dict | None = None
                       ) -> tuple[float, float, float]:
    """ROUGE-Lsum (P, R, F) as rouge-score computes it (summary-level union LCS over newline-separated sentences,
    hits clipped by token counts as ROUGE-1.5.5 does). Two exact shortcuts: a sentence pair with no token in common
    has an empty LCS and is not computed, and each pair's LCS is kept in `cache` (one dict for a whole evaluation:
    the reference sentences are the same for every system, and systems share many sentences)."""
    reference = [tuple(s) for s in reference if s]
    candidate = [tuple(s) for s in candidate if s]
    m, n = sum(map(len, reference)), sum(map(len, candidate))
    if not m or not n:
        return 0.0, 0.0, 0.0
    cache = cache if cache is not None else {}
    remaining_r = Counter(t for s in reference for t in s)
    remaining_c = Counter(t for s in candidate for t in s)
    candidate_sets = [set(c) for c in candidate]
    hits = 0
    for ref in reference:
        ref_set = set(ref)
        union: set[int] = set()
        for can, can_set in zip(candidate, candidate_sets, strict=True):
            if ref_set.isdisjoint(can_set):
                continue
            key = (ref, can)
            if key not in cache:
                cache[key] = _lcs_indices(ref, can)
            union.update(cache[key])
        for i in sorted(union):
            token = ref[i]
            if remaining_c[token] > 0 and remaining_r[token] > 0:
                hits += 1
                remaining_c[token] -= 1
                remaining_r[token] -= 1
    return _prf(hits, n, m)


def ngram_counts(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def ngram_rouge(candidate: Counter, reference: Counter) -> tuple[float, float, float]:
    """(precision, recall, F) of ROUGE-N from n-gram counts, clipped as rouge-score clips them."""
    overlap = sum((candidate & reference).values())
    c, r = sum(candidate.values()), sum(reference.values())
    precision = overlap / c if c else 0.0
    recall = overlap / r if r else 0.0
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


def bootstrap_ci(values: Sequence[float], resamples: int = 1000, seed: int = 0, level: float = 0.95
                 ) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean over notes (resampling notes, seeded), or None for < 2 values."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def idf_weights(references: Sequence[str], tokenizer) -> dict[int, float]:
    """bert_score's idf over the references: log((M + 1) / (df + 1)) for a token id in df of the M references; an
    id in none gets log(M + 1) (`BertScorer.with_idf` applies that default)."""
    from cmbert.core.notes import tokenize_notes

    notes = tokenize_notes(tokenizer, [r.strip() for r in references], max_tokens=1 << 62)
    df: Counter = Counter()
    for i in range(len(notes)):
        df.update(set(notes.note(i).tolist()))
    m = len(references)
    return {int(token): math.log((m + 1) / (count + 1)) for token, count in df.items()}


class BertScorer:
    """BERTScore P/R/F1 with a local encoder folder (see the module docstring for the definition and the choices)."""

    def __init__(self, folder: str | Path, layer: int | None = None, device: str = "cpu",
                 tokens_per_batch: int = 16384):
        import torch

        from cmbert.core.embeddings import context_length, load_encoder, model_config

        self.folder = Path(folder)
        self.device = torch.device(device)
        self.encoder, self.tokenizer = load_encoder(self.folder, self.device)
        depth = len(getattr(self.encoder, "layers", []))
        if layer is not None:
            if model_config(self.folder).get("model_type") != "modernbert":
                raise UserError(f"{folder}: choosing a layer needs a ModernBERT folder (other encoders: the last)")
            if not 1 <= layer <= depth:
                raise UserError(f"layer must be in 1..{depth} for {folder}, got {layer}")
            # bert_score's num_layers: keep the first `layer` layers; the final LayerNorm still runs after them.
            self.encoder.layers = self.encoder.layers[:layer]
        self.layer = layer if layer is not None else depth or None
        self.context = context_length(self.folder)
        self.tokens_per_batch = tokens_per_batch
        self.idf: dict[int, float] | None = None  # token id -> weight; None: every token 1 (`with_idf` sets it)
        self.unseen_idf = 0.0

    def token_states(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per text: (L2-normalised token states [n, hidden] float32 over all its chunks, token weights [n])."""
        import torch

        from cmbert.core.notes import collate, token_budget_batches, tokenize_notes

        config = self.encoder.config
        notes = tokenize_notes(self.tokenizer, [t.strip() for t in texts], max_tokens=1 << 62)
        out: list[tuple[np.ndarray, np.ndarray]] = [None] * len(texts)  # type: ignore[list-item]
        batches = token_budget_batches(np.diff(notes.offsets), max(self.tokens_per_batch, self.context),
                                       max_notes=256)
        for idx in batches:
            batch = collate([notes.note(i) for i in idx], self.context, config.cls_token_id, config.sep_token_id)
            cu = batch["cu_seqlens"]
            with torch.no_grad():
                h = self.encoder(input_ids=batch["input_ids"].to(self.device), cu_seqlens=cu.to(self.device),
                                 max_seqlen=batch["max_seqlen"]).last_hidden_state.float()
            h = torch.nn.functional.normalize(h, dim=-1).cpu().numpy()
            ids = batch["input_ids"].numpy()
            special = np.zeros(len(ids), dtype=bool)
            special[cu[:-1].numpy()] = True  # each chunk's [CLS] ...
            special[cu[1:].numpy() - 1] = True  # ... and [SEP]
            chunks = batch["note_chunks"].tolist()
            for row, i in enumerate(idx):
                s, e = int(cu[chunks[row]]), int(cu[chunks[row + 1]])
                if self.idf is None:
                    weights = np.ones(e - s, dtype=np.float64)
                else:
                    weights = np.asarray([self.idf.get(int(t), self.unseen_idf) for t in ids[s:e]], dtype=np.float64)
                weights[special[s:e]] = 0.0
                out[int(i)] = (h[s:e], weights)
        return out

    def score(self, candidates: Sequence[str], references: Sequence[str], block: int = 256
              ) -> list[tuple[float, float, float]]:
        """(P, R, F1) per pair; an empty candidate or reference scores 0 (bert_score's value)."""
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
        scores = []
        for start in range(0, len(candidates), block):  # bounded memory: one block's token states at a time
            hyps = self.token_states(candidates[start:start + block])
            refs = self.token_states(references[start:start + block])
            scores += [greedy_match(*hyp, *ref) for hyp, ref in zip(hyps, refs, strict=True)]
        return scores

    def with_idf(self, references: Sequence[str]) -> BertScorer:
        """Weight tokens by their idf over `references` (bert_score's `idf=True`)."""
        self.idf = idf_weights(references, self.tokenizer)
        self.unseen_idf = math.log(len(references) + 1)
        return self


def greedy_match(hyp: np.ndarray, hyp_weights: np.ndarray, ref: np.ndarray, ref_weights: np.ndarray
                 ) -> tuple[float, float, float]:
    """BERTScore's greedy cosine matching of normalised token states: (P, R, F1)."""
    if not hyp_weights.sum() or not ref_weights.sum():
        return 0.0, 0.0, 0.0
    sim = hyp @ ref.T  # float32, as bert_score computes it
    precision = float(sim.max(axis=1).astype(np.float64) @ hyp_weights / hyp_weights.sum())
    recall = float(sim.max(axis=0).astype(np.float64) @ ref_weights / ref_weights.sum())
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f
