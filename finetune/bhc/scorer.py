"""The supervised sentence scorer of `cmbert bhc summarize --method scorer`: a small regression head on frozen
sentence embeddings plus position and section features, trained on the train split to predict how much of each
source sentence reappears in the reference BHC.

Labels (`LABELS`, per source sentence, against its note's target, with the oracle's tokens and clipped counts):
- ``precision``: ROUGE-1 + ROUGE-2 precision of the sentence alone: the share of its words and word pairs that the
  BHC contains. Selection fills a word budget, so what matters is value per word; precision is that.
- ``f``: ROUGE-1 + ROUGE-2 F of the sentence alone (favours long sentences, which recall more).
Both are smooth regression targets (membership in the greedy oracle would be a sparse 0/1 label). Which one, and the
head (ridge regression over an alpha grid, or a one-hidden-layer MLP), are chosen by the ROUGE-1 + ROUGE-2 F of the
summaries each candidate builds on validation notes.

Features (`features`), one row per candidate sentence:
- the encoder's mean-pooled sentence embedding (frozen; `cmbert.core.embeddings`);
- the section it sits under, one-hot over the sections that head >= 2 % of train notes (at most 40, plus "other"
  and "none"): History of Present Illness and Discharge Diagnosis sentences tend to reappear in a BHC, exam and lab
  lines rarely;
- its index within that section (0, 1, 2, 3+): the first HPI sentence is the one-line summary of the admission;
- relative position in the note (a number and ten bins), list item or not, log words, share of tokens that are
  numbers, whether it holds a `___`.
Columns are standardised with the train mean and standard deviation (kept with the head).

Saved in the run folder: `scorer.json` (the settings, the section vocabulary, the selection table, the encoder's
hash and the train split's fingerprint, so a later run with the same folder reuses the head instead of retraining)
and `scorer.pt` (the tensors: standardisation and weights).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cmbert.core.errors import UserError
from cmbert.finetune.bhc.metrics import ngram_counts, ngram_rouge
from cmbert.finetune.bhc.pairs import Pair
from cmbert.finetune.bhc.selection import LengthRule, centred_cosine, relative_positions, select_to_budget

LABELS = ("precision", "f")
RIDGE_ALPHAS = (1.0, 10.0, 100.0, 1000.0)
SECTION_MIN_SHARE = 0.02
MAX_SECTIONS = 40
POSITION_BINS = 10


def sentence_labels(pair: Pair, label: str) -> np.ndarray:
    ref1, ref2 = pair.target_ngrams()
    out = np.zeros(len(pair.units))
    for i, tokens in enumerate(pair.tokens):
        p1, _, f1 = ngram_rouge(ngram_counts(tokens, 1), ref1)
        p2, _, f2 = ngram_rouge(ngram_counts(tokens, 2), ref2)
        out[i] = p1 + p2 if label == "precision" else f1 + f2
    return out


def section_vocabulary(train: Sequence[Pair]) -> list[str]:
    """Sections that head at least SECTION_MIN_SHARE of train notes, most frequent first (at most MAX_SECTIONS)."""
    counts = Counter(section for p in train for section in {u.section for u in p.units})
    floor = SECTION_MIN_SHARE * len(train)
    return [s for s, c in counts.most_common(MAX_SECTIONS) if c >= floor and s]


def features(pair: Pair, vectors: np.ndarray, sections: list[str]) -> np.ndarray:
    """[n_sentences, dim + extra] features of one note (see the module docstring)."""
    n = len(pair.units)
    index = {s: i for i, s in enumerate(sections)}
    section_cols = np.zeros((n, len(sections) + 2))  # + other + none
    in_section = np.zeros((n, 4))
    previous, count = None, 0
    for i, unit in enumerate(pair.units):
        col = index.get(unit.section, len(sections)) if unit.section else len(sections) + 1
        section_cols[i, col] = 1.0
        count = count + 1 if unit.section == previous else 0
        previous = unit.section
        in_section[i, min(count, 3)] = 1.0
    position = relative_positions(pair)
    bins = np.zeros((n, POSITION_BINS))
    bins[np.arange(n), np.minimum((position * POSITION_BINS).astype(int), POSITION_BINS - 1)] = 1.0
    words = np.asarray(pair.unit_words(), dtype=np.float64)
    numbers = np.asarray([sum(t.isdigit() for t in toks) / max(len(toks), 1) for toks in pair.tokens])
    item = np.asarray([u.kind == "item" for u in pair.units], dtype=np.float64)
    deid = np.asarray(["___" in t for t in pair.texts], dtype=np.float64)
    extra = np.column_stack([position, np.log1p(words), numbers, item, deid])
    return np.hstack([vectors.astype(np.float64), section_cols, in_section, bins, extra])


class SentenceScorer:
    """A fitted head: standardisation + ridge weights or an MLP (see the module docstring)."""

    def __init__(self, config: dict, tensors: dict[str, torch.Tensor]):
        self.config, self.tensors = config, tensors
        self._mlp = None
        if config["head"] == "mlp":
            self._mlp = _mlp(tensors["mean"].numel(), config["hidden"])
            self._mlp.load_state_dict({k.removeprefix("mlp."): v for k, v in tensors.items() if k.startswith("mlp.")})
            self._mlp.eval()

    def scores(self, x: np.ndarray) -> np.ndarray:
        z = (torch.from_numpy(x).float() - self.tensors["mean"]) / self.tensors["std"]
        with torch.no_grad():
            if self._mlp is not None:
                return self._mlp(z).squeeze(-1).double().numpy()
            return (z @ self.tensors["weight"] + self.tensors["bias"]).double().numpy()

    def save(self, folder: Path) -> None:
        torch.save(self.tensors, folder / "scorer.pt")
        (folder / "scorer.json").write_text(json.dumps(self.config, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> SentenceScorer:
        config = json.loads((folder / "scorer.json").read_text(encoding="utf-8"))
        return cls(config, torch.load(folder / "scorer.pt", weights_only=True))


def _mlp(width: int, hidden: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.GELU(), torch.nn.Dropout(0.1),
                               torch.nn.Linear(hidden, 1))


def _fit_ridge(z: torch.Tensor, y: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    """Closed-form ridge on standardised features (the intercept is the label mean, unpenalised)."""
    z64, y64 = z.double(), y.double()
    bias = y64.mean()
    gram = z64.T @ z64 + alpha * torch.eye(z64.shape[1], dtype=torch.float64)
    weight = torch.linalg.solve(gram, z64.T @ (y64 - bias))
    return {"weight": weight.float(), "bias": bias.float().reshape(1)}


def _fit_mlp(z: torch.Tensor, y: torch.Tensor, hidden: int, epochs: int, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    mlp = _mlp(z.shape[1], hidden)
    optimizer = torch.optim.AdamW(mlp.parameters(), lr=1e-3, weight_decay=1e-2)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(z), generator=generator).split(512):
            loss = torch.nn.functional.mse_loss(mlp(z[idx]).squeeze(-1), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {f"mlp.{k}": v.detach().clone() for k, v in mlp.state_dict().items()}


def summary_rouge(pairs: Sequence[Pair], chosen: Sequence[Sequence[int]]) -> float:
    """Mean ROUGE-1 F + ROUGE-2 F of extractive summaries (the units chosen per pair), on the oracle's tokens."""
    total = 0.0
    for pair, idx in zip(pairs, chosen, strict=True):
        ref1, ref2 = pair.target_ngrams()
        tokens = [pair.tokens[i] for i in idx]
        g1 = sum((ngram_counts(t, 1) for t in tokens), Counter())
        g2 = sum((ngram_counts(t, 2) for t in tokens), Counter())
        total += ngram_rouge(g1, ref1)[2] + ngram_rouge(g2, ref2)[2]
    return total / max(len(pairs), 1)


def train_scorer(train: Sequence[Pair], train_vectors: Sequence[np.ndarray], validation: Sequence[Pair],
                 validation_vectors: Sequence[np.ndarray], rule: LengthRule, max_similarity: float = 1.0,
                 seed: int = 0, mlp_hidden: int = 128, mlp_epochs: int = 8, progress=None) -> SentenceScorer:
    """Fit every (label, head) candidate on train, keep the one whose validation summaries (selected as
    `cmbert bhc summarize` selects: the budget, then `max_similarity` redundancy control) score best."""
    if not train or not validation:
        raise UserError("the scorer needs train and validation pairs")
    sections = section_vocabulary(train)
    x = np.vstack([features(p, v, sections) for p, v in zip(train, train_vectors, strict=True)])
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std < 1e-8] = 1.0  # a constant column (a section no train note has) must not divide by 0
    z = torch.from_numpy((x - mean) / std).float()
    val_x = [features(p, v, sections) for p, v in zip(validation, validation_vectors, strict=True)]
    budgets = [rule.budget(p) for p in validation]
    similarities = [centred_cosine(v) for v in validation_vectors]
    candidates = [(label, "ridge", {"alpha": a}) for label in LABELS for a in RIDGE_ALPHAS]
    candidates += [(label, "mlp", {"hidden": mlp_hidden, "epochs": mlp_epochs}) for label in LABELS]
    base = {"sections": sections, "features": int(x.shape[1]), "embedding_dim": int(train_vectors[0].shape[1]),
            "train_notes": len(train), "train_sentences": int(len(x)), "validation_notes": len(validation)}
    labels = {label: torch.from_numpy(np.concatenate([sentence_labels(p, label) for p in train])).float()
              for label in LABELS}
    table, best = [], None
    for label, head, settings in candidates:
        if head == "ridge":
            fitted = _fit_ridge(z, labels[label], settings["alpha"])
        else:
            fitted = _fit_mlp(z, labels[label], settings["hidden"], settings["epochs"], seed)
        config = {**base, "label": label, "head": head, **settings}
        scorer = SentenceScorer(config, {"mean": torch.from_numpy(mean).float(),
                                         "std": torch.from_numpy(std).float(), **fitted})
        chosen = [select_to_budget(scorer.scores(vx), p.unit_words(), b, texts=p.texts, similarity=sim,
                                   max_similarity=max_similarity)
                  for p, vx, b, sim in zip(validation, val_x, budgets, similarities, strict=True)]
        value = summary_rouge(validation, chosen)
        table.append({"label": label, "head": head, **settings, "validation_rouge1_plus_rouge2_f": round(value, 5)})
        if progress:
            progress(table[-1])
        if best is None or value > best[0] + 1e-12:
            best = (value, scorer)
    best[1].config["selection"] = table
    return best[1]


def scores_for(scorer: SentenceScorer, pair: Pair, vectors: np.ndarray) -> np.ndarray:
    return scorer.scores(features(pair, vectors, scorer.config["sections"]))

