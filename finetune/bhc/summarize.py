"""`cmbert bhc summarize`: extractive Brief Hospital Course summaries of a prepared dataset's notes.

    cmbert bhc summarize --data runs/bhc --model runs/demo/model --method scorer --out runs/bhc-scorer

Methods (`METHODS`; details in `cmbert.finetune.bhc.selection` and `cmbert.finetune.bhc.scorer`): ``lead`` (lead-k), ``oracle``
(greedy ROUGE oracle, an upper bound), ``centrality`` (LexRank on our encoder's sentence embeddings, unsupervised),
``scorer`` (a head trained on train-split sentence -> ROUGE labels over frozen embeddings + position/section
features, chosen on validation). Every method but the oracle fills the same per-note word budget
(`selection.LengthRule`: fitted on train, or `--length N` words).

Run folder (`--out`):
- `summaries/{split}.jsonl.gz`: `{"note_id", "summary", "sentences", "budget"}` a line: the summary (one source
  sentence per line, in source order), the indices of its sentences among the note's candidate sentences
  (`cmbert.finetune.bhc.sentences.candidate_sentences`) and the word budget. Note text stays here, on disk.
- `report.json`: method, encoder and its hash, the dataset and each split's fingerprint, the length rule, counts
  (notes, skips by reason, mean summary and target words), seconds per step. Numbers and ids only.
- `scorer.json` + `scorer.pt` (method scorer): the trained head, reused by a later run into the same folder when the
  encoder, the train split and the settings match (so `--splits test` after a first run does not retrain).
- `embeddings/` (unless `--cache` points elsewhere): sentence embeddings cached by encoder and text
  (`cmbert.core.embeddings.cached_embeddings`), so rerunning or trying another method with the same `--cache` embeds
  nothing twice.

Nothing the command prints or writes to report.json contains note text.
"""

from __future__ import annotations

import gzip
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cmbert.core.errors import MissingInput, UserError
from cmbert.finetune.bhc.pairs import Pair, read_split, split_fingerprint
from cmbert.finetune.bhc.selection import LengthRule, centrality_scores, centred_cosine, lead, oracle, select_to_budget
from cmbert.finetune.bhc.sentences import assemble

METHODS = ("lead", "oracle", "centrality", "scorer")
ENCODER_METHODS = ("centrality", "scorer")
# Redundancy control of the encoder methods: a sentence whose centred cosine to one already chosen exceeds this is a
# near-repeat and is skipped (on d1500's validation notes: centrality 0.284 -> 0.329 ROUGE-1+2 F, scorer 0.422 ->
# 0.426; 0.8 and 0.95 do no better).
MAX_SIMILARITY = 0.9
# Train notes the length rule (and the scorer) learn from by default: the budget's median ratio and percentiles
# settle long before this, and each note costs sentence splitting, ROUGE labels and embeddings.
FIT_TRAIN_NOTES = 1000
SENTENCE_MAX_TOKENS = 512  # a "sentence" longer than this (a runaway lab table line) is cut for its embedding


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sentence_vectors(pairs: Sequence[Pair], model: Path, cache_dir: Path, encoder, precision: str = "fp32",
                     progress: bool = True) -> list[np.ndarray]:
    """Each pair's candidate sentences embedded (mean-pooled final states, our encoder's unpadded path), cached."""
    from cmbert.core.embeddings import cached_embeddings, context_length
    from cmbert.core.runtime import device_and_dtype

    device, dtype = device_and_dtype(precision, "auto")
    texts = [t for p in pairs for t in p.texts]
    vectors = cached_embeddings(cache_dir, model, texts, SENTENCE_MAX_TOKENS, context_length(model), "mean",
                                device, dtype, progress=progress, encoder=encoder)
    offsets = np.cumsum([0] + [len(p.texts) for p in pairs])
    return [vectors[offsets[i]:offsets[i + 1]] for i in range(len(pairs))]


class _Encoder:
    """Loads the encoder once, on first use (a cache hit never loads it)."""

    def __init__(self, model: Path, precision: str):
        self.model, self.precision, self.loaded = model, precision, None

    def __call__(self, pairs: Sequence[Pair], cache_dir: Path, progress: bool) -> list[np.ndarray]:
        from cmbert.core.embeddings import cache_file, context_length, load_encoder
        from cmbert.core.runtime import device_and_dtype

        device, dtype = device_and_dtype(self.precision, "auto")
        texts = [t for p in pairs for t in p.texts]
        hit = cache_file(cache_dir, self.model, texts, SENTENCE_MAX_TOKENS, context_length(self.model), "mean",
                         dtype).is_file()
        if self.loaded is None and not hit:
            self.loaded = load_encoder(self.model, device)
        return sentence_vectors(pairs, self.model, cache_dir, self.loaded, self.precision, progress)


def _check_run_folder(out: Path, method: str, model_hash: str | None, data: Path) -> dict:
    """The run's earlier report (or {}); a folder holding another method's, encoder's or dataset's run is refused."""
    path = out / "report.json"
    if not path.is_file():
        return {}
    report = json.loads(path.read_text(encoding="utf-8"))
    if report.get("method") != method or report.get("model_hash") != model_hash:
        raise UserError(f"{out} holds a {report.get('method')} run with another setup; choose another --out")
    if Path(report["data"]["path"]).resolve() != data.resolve():
        raise UserError(f"{out} holds summaries of {report['data']['path']}, not {data}; choose another --out")
    return report


def summarize(data: str | Path, out: str | Path, method: str, model: str | Path | None = None,
              splits: Sequence[str] = ("validation", "test"), length: int | None = None,
              cache_dir: str | Path | None = None, max_train_notes: int = FIT_TRAIN_NOTES, max_validation_notes: int = 500,
              precision: str = "fp32", seed: int = 0, progress: bool = True) -> dict:
    """Write `out`/summaries/{split}.jsonl.gz and `out`/report.json (see the module docstring); returns the report."""
    from cmbert.finetune.bhc import scorer as scorer_lib

    start = time.perf_counter()
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    data, out = Path(data), Path(out)
    model_hash = None
    if method in ENCODER_METHODS:
        from cmbert.core.embeddings import model_config
        from cmbert.core.embeddings import model_hash as hash_of

        if model is None:
            raise UserError(f"--method {method} needs --model (an encoder folder)")
        model = Path(model)
        model_config(model)  # a clear error for a folder without config.json
        model_hash = hash_of(model)
    earlier = _check_run_folder(out, method, model_hash, data)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir else out / "embeddings"
    encode = _Encoder(model, precision) if model_hash else None
    seconds: dict[str, float] = {}
    skipped: dict[str, dict] = {}

    def timed(name: str, t0: float) -> None:
        seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - t0, 2)

    # The length rule and the scorer come from train; read it only as far as needed.
    t0 = time.perf_counter()
    train: list[Pair] = []
    if length is None or method == "scorer":
        skipped["fit_train"] = Counter()
        train = read_split(data, "train", skipped["fit_train"], limit=max_train_notes)
    rule = LengthRule.fixed(length) if length is not None else LengthRule.fit(train)
    timed("read_train", t0)

    scorer = None
    if method == "scorer":
        scorer = _trained_scorer(out, data, train, rule, model_hash, encode, cache, max_validation_notes, seed,
                                 progress, seconds, skipped, scorer_lib)

    report = {"method": method, "model": str(model) if model else None, "model_hash": model_hash,
              "data": {"path": str(data), "splits": dict(earlier.get("data", {}).get("splits", {}))},
              "length_rule": rule.to_dict(),
              "settings": {"precision": precision, "max_train_notes": max_train_notes, "seed": seed,
                           **({"max_similarity": MAX_SIMILARITY} if method in ENCODER_METHODS else {})},
              "splits": dict(earlier.get("splits", {}))}
    for split in splits:
        t0 = time.perf_counter()
        skipped[split] = Counter()
        pairs = read_split(data, split, skipped[split])
        vectors = encode(pairs, cache, progress) if encode is not None else None
        timed(f"embed_{split}" if encode is not None else f"read_{split}", t0)
        t0 = time.perf_counter()
        rows, words = [], []
        for i, pair in enumerate(pairs):
            budget = rule.budget(pair)
            if method == "lead":
                chosen = lead(pair, budget)
            elif method == "oracle":
                chosen = oracle(pair)
            elif method == "centrality":
                chosen = select_to_budget(centrality_scores(vectors[i]), pair.unit_words(), budget,
                                          texts=pair.texts, similarity=centred_cosine(vectors[i]),
                                          max_similarity=MAX_SIMILARITY)
            else:
                chosen = select_to_budget(scorer_lib.scores_for(scorer, pair, vectors[i]), pair.unit_words(), budget,
                                          texts=pair.texts, similarity=centred_cosine(vectors[i]),
                                          max_similarity=MAX_SIMILARITY)
            summary = assemble(pair.source, [pair.units[j] for j in chosen])
            rows.append({"note_id": pair.note_id, "summary": summary, "sentences": chosen, "budget": budget})
            words.append(len(summary.split()))
        _write_jsonl_gz(out / "summaries" / f"{split}.jsonl.gz", rows)
        timed(f"summarize_{split}", t0)
        report["data"]["splits"][split] = {"fingerprint": split_fingerprint(pairs), "notes": len(pairs)}
        report["splits"][split] = {
            "notes": len(pairs), "skipped": dict(sorted(skipped[split].items())), "length_rule": rule.to_dict(),
            "mean_summary_words": round(float(np.mean(words)), 1) if words else None,
            "mean_budget_words": round(float(np.mean([r["budget"] for r in rows])), 1) if rows else None,
            "mean_target_words": round(float(np.mean([p.target_words for p in pairs])), 1) if pairs else None}
        if progress:
            _log(f"{split}: {len(pairs):,} notes summarised ({method})")
    # Skips among the notes the length rule and the scorer were fitted on (train; validation picks the scorer).
    report["fitting_skipped"] = {name: dict(sorted(skipped[f"fit_{name}"].items()))
                                 for name in ("train", "validation") if f"fit_{name}" in skipped}
    if scorer is not None:
        report["scorer"] = {k: v for k, v in scorer.config.items() if k != "sections"}
    report["seconds"] = {**seconds, "total": round(time.perf_counter() - start, 2)}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


def _trained_scorer(out, data, train, rule, model_hash, encode, cache, max_validation_notes, seed, progress,
                    seconds, skipped, scorer_lib):
    """The run folder's scorer when it was trained on this encoder, train split and length rule; else a new one."""
    key = {"model_hash": model_hash, "train_fingerprint": split_fingerprint(train), "length_rule": rule.to_dict(),
           "seed": seed, "max_validation_notes": max_validation_notes, "max_similarity": MAX_SIMILARITY}
    if (out / "scorer.json").is_file() and (out / "scorer.pt").is_file():
        saved = scorer_lib.SentenceScorer.load(out)
        if all(saved.config.get(k) == v for k, v in key.items()):
            if progress:
                _log("scorer: reusing the one trained in this run folder")
            return saved
    t0 = time.perf_counter()
    skipped["fit_validation"] = Counter()
    validation = read_split(data, "validation", skipped["fit_validation"], limit=max_validation_notes)
    train_vectors = encode(train, cache, progress)
    validation_vectors = encode(validation, cache, progress)
    seconds["embed_scorer_data"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    report = (lambda row: _log("scorer candidate: " + json.dumps(row))) if progress else None
    scorer = scorer_lib.train_scorer(train, train_vectors, validation, validation_vectors, rule,
                                     max_similarity=MAX_SIMILARITY, seed=seed, progress=report)
    seconds["train_scorer"] = round(time.perf_counter() - t0, 2)
    scorer.config.update(key, train_seconds=seconds["train_scorer"], embed_seconds=seconds["embed_scorer_data"])
    scorer.save(out)
    return scorer


def _write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row) + "\n")
    tmp.replace(path)



def summarize_from_config(cfg) -> dict:
    """`summarize` with the settings of a `BhcSummarizeConfig` (cmbert.finetune.bhc.config)."""
    return summarize(cfg.data, cfg.out, cfg.method, model=cfg.model, splits=cfg.splits, length=cfg.length,
                     cache_dir=cfg.cache, max_train_notes=cfg.max_train_notes,
                     max_validation_notes=cfg.max_validation_notes, precision=cfg.precision, seed=cfg.seed)


def format_run(report: dict, method: str, out: str) -> str:
    """What `cmbert bhc summarize` prints: per split counts, mean words and skips (no text)."""
    lines = []
    for split, s in report["splits"].items():
        skipped = ", ".join(f"{k} {v:,}" for k, v in s["skipped"].items()) or "none"
        lines.append(f"{split}: {s['notes']:,} notes, mean {s['mean_summary_words']} summary words (budget "
                     f"{s['mean_budget_words']}, target {s['mean_target_words']}); skipped: {skipped}")
    lines.append(f"{method} summaries in {out}/summaries (note text stays there); report: {out}/report.json "
                 f"({report['seconds']['total']:.0f} s)")
    return "\n".join(lines)
def read_summaries(run: str | Path, split: str) -> dict[str, str]:
    """note_id -> summary of a run folder's split."""
    path = Path(run) / "summaries" / f"{split}.jsonl.gz"
    if not path.is_file():
        raise MissingInput(f"{path}: no summaries of the {split} split in this run folder")
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return {row["note_id"]: row["summary"] for row in map(json.loads, filter(str.strip, file))}
