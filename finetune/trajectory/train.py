"""`cmbert finetune trajectory train --config ...`: the visit-sequence model with codes, notes or both, next to the
baselines, on one split; writes `<out>/report.json`, `<out>/comparison.png` and one model folder per input set.

    build (inputs vocabulary, note pieces from the frozen encoder or note tokens for a fine-tuned one, title
    embeddings, windows) -> per input set: train with early stopping on the validation metric, keep the best epoch
    -> score val/test -> baselines -> paired bootstrap -> report

Samples are (patient, visit t >= 1) in patient order then t (`cmbert.finetune.trajectory.data`). Each target reads its latest
`max_visits` past visits: training reads a patient in windows of `max_visits + 1` visits that overlap by one (every
target once, one pass each), scoring gives each target beyond the first window a window of its own. Baselines,
scored on the same samples (ties broken by the training frequency, so each ranks every category):
- repeat_last: the categories of the previous visit;
- patient_frequent: the patient's categories by how many past visits (the latest `max_visits`) had them;
- population: the categories by training frequency (the same ranking for everyone).

Each input set trains with the core fine-tuning loop (`cmbert.core.loop`) in `<out>/<inputs>/`: ckpt/ (resume
state, removed when the set finishes), config.json (what the set depends on: `variant_config`), metrics.jsonl,
model/, scores.npz, result.json (written last). A killed run, rerun with the same command, reuses the finished sets
and resumes the interrupted one to the model it would have trained uninterrupted; a checkpoint or a finished set that
another config wrote is refused (use a new out, or remove the folder).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cmbert.core.embeddings import cached_embeddings, load_encoder, model_hash, segments_of_tokens
from cmbert.core.errors import UserError
from cmbert.core.loop import (
    constant_schedule,
    finished_report,
    linear_schedule,
    open_run_log,
    remove_checkpoints,
    resume,
    train_epochs,
)
from cmbert.core.lora import apply_lora, trainable_summary
from cmbert.core.notes import collate as collate_chunks
from cmbert.core.notes import tokenize_notes
from cmbert.core.pruning import prune_layers
from cmbert.core.runtime import device_and_dtype, provenance
from cmbert.data.ontology import titles
from cmbert.finetune.trajectory.config import TrajectoryConfig
from cmbert.finetune.trajectory.data import Patient, read_categories, read_notes, read_patients
from cmbert.finetune.trajectory.metrics import paired_bootstrap, plot_comparison, ranking_metrics
from cmbert.finetune.trajectory.model import PAD, RARE, TrajectoryMeta, TrajectoryModel, age_bucket, gap_bucket
from cmbert.modeling import enable_checkpointing

SPLITS = ("train", "val", "test")
REPORT_METRICS = ("recall@20", "mar@20")  # the quality bar: notes must beat codes-only and the baselines
HISTORY_METRICS = ("recall@20", "mar@20", "map@20")  # each epoch's validation scores in the result's history


def visit_tokens(visit) -> list[str]:
    """A visit's input tokens: its categories, raw diagnosis codes and procedures."""
    return [f"C:{c}" for c in visit.targets] + list(visit.diagnoses) + list(visit.procedures)


def build_vocabulary(train: list[Patient], min_count: int) -> list[str]:
    """Input tokens seen on at least `min_count` training visits, most frequent first, after PAD and RARE."""
    counts = Counter(token for p in train for v in p.visits for token in set(visit_tokens(v)))
    kept = sorted((t for t, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))
    return ["[PAD]", "[RARE]", *kept]


@dataclass
class Window:
    """Up to max_visits + 1 consecutive visits of one patient; position j >= 1 is the target of sample_ids[j]."""

    tokens: list[list[int]]
    note_rows: list[int]  # rows of the note embedding matrix; -1: no note
    gap: list[int]
    age: list[int]
    targets: list[list[int]]  # category ids of each visit
    sample_ids: list[int]  # -1 at position 0


@dataclass
class SplitData:
    patients: list[Patient]
    windows: list[Window]
    y: np.ndarray  # bool [n_samples, n_categories]
    history: list[list[list[int]]]  # per sample: category ids of each past visit (baselines)


def build_split(patients: list[Patient], token_ids: dict[str, int], category_ids: dict[str, int],
                note_rows: dict[str, int], max_visits: int, exact: bool = False) -> SplitData:
    n_samples = sum(len(p.visits) - 1 for p in patients)
    y = np.zeros((n_samples, len(category_ids)), dtype=bool)
    windows, history = [], []
    base = 0
    for patient in patients:
        visits = patient.visits
        cats = [[category_ids[c] for c in v.targets if c in category_ids] for v in visits]
        for t in range(1, len(visits)):
            y[base + t - 1, cats[t]] = True
            history.append(cats[max(0, t - max_visits):t])
        # (first visit, last visit + 1, first target scored): training strides through the patient; scoring gives
        # every target beyond the first window a window of its own, so it reads exactly its latest max_visits visits
        # (as `predict trajectory` and the baselines do).
        spans = [(s, min(s + max_visits + 1, len(visits)), s + 1) for s in range(0, len(visits) - 1, max_visits)]
        if exact:
            spans = spans[:1] + [(t - max_visits, t + 1, t) for t in range(max_visits + 1, len(visits))]
        for start, end, first_target in spans:
            part = range(start, end)
            windows.append(Window(
                tokens=[[token_ids.get(tok, RARE) for tok in visit_tokens(visits[i])] for i in part],
                note_rows=[note_rows.get(visits[i].note_id, -1) for i in part],
                gap=[gap_bucket(visits[i].days_since_previous) for i in part],
                age=[age_bucket(visits[i].age) for i in part],
                targets=[cats[i] for i in part],
                sample_ids=[base + i - 1 if i >= first_target else -1 for i in part]))
        base += len(visits) - 1
    return SplitData(patients, windows, y, history)


@dataclass
class NotePieces:
    """The note pieces of a dataset's notes (`cmbert.core.embeddings.embed_segments`): note row r is
    vectors[offsets[r]:offsets[r + 1]]."""

    vectors: torch.Tensor  # fp16 [total, note_dim]
    offsets: np.ndarray

    @classmethod
    def empty(cls, dim: int = 1) -> NotePieces:
        return cls(torch.zeros(0, dim, dtype=torch.float16), np.zeros(1, dtype=np.int64))


@dataclass
class NoteTokens:
    """The notes as token ids, for a model that fine-tunes its encoder (`model.finetune_encoder`): the batch carries
    the chunks of the notes it reads and the model's encoder turns them into pieces."""

    notes: object  # cmbert.core.notes.TokenizedNotes; row r is a note row of the windows
    chunk_length: int
    cls_id: int
    sep_id: int


def collate(windows: list[Window], notes: NotePieces | NoteTokens | None, n_categories: int, note_dropout: float = 0.0,
            generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Padded batch of windows, with the pieces (or, for a fine-tuned encoder, the token chunks) of the notes its
    visits read (row -1 = no note; `notes` None: a model that reads no notes)."""
    length = max(len(w.gap) for w in windows)
    batch = len(windows)
    tokens, offsets = [], []
    gap = torch.zeros(batch, length, dtype=torch.long)
    age = torch.zeros(batch, length, dtype=torch.long)
    rows = torch.full((batch, length), -1, dtype=torch.long)
    targets = torch.zeros(batch, length, n_categories)
    present = torch.zeros(batch, length, n_categories)
    valid = torch.zeros(batch, length, dtype=torch.bool)  # position t has a next visit in the window
    for b, w in enumerate(windows):
        n = len(w.gap)
        for t in range(length):
            offsets.append(len(tokens))
            if t < n:
                tokens += w.tokens[t] or [PAD]
        gap[b, :n], age[b, :n], rows[b, :n] = torch.tensor(w.gap), torch.tensor(w.age), torch.tensor(w.note_rows)
        for t in range(n):
            present[b, t, w.targets[t]] = 1.0
            if t:
                targets[b, t - 1, w.targets[t]] = 1.0
        valid[b, :n - 1] = True
    has_note = rows >= 0
    if note_dropout > 0:
        has_note &= torch.rand(rows.shape, generator=generator) >= note_dropout
    read = [(flat, row) for flat, row in enumerate(rows.flatten().tolist()) if row >= 0 and has_note.view(-1)[flat]
            and notes is not None]
    out = {"tokens": torch.tensor(tokens, dtype=torch.long), "offsets": torch.tensor(offsets, dtype=torch.long),
           "segments": None, "segment_visit": None, "note_tokens": None}
    if isinstance(notes, NoteTokens):
        if read:
            chunks = collate_chunks([notes.notes.note(row) for _, row in read], notes.chunk_length, notes.cls_id,
                                    notes.sep_id)
            out["note_tokens"] = {"input_ids": chunks["input_ids"], "cu_seqlens": chunks["cu_seqlens"],
                                  "max_seqlen": chunks["max_seqlen"], "note_chunks": chunks["note_chunks"],
                                  "note_visit": torch.tensor([flat for flat, _ in read], dtype=torch.long)}
        else:
            out["segments"], out["segment_visit"] = torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)
    else:
        pieces, owners = [], []
        for flat, row in read:
            start, end = int(notes.offsets[row]), int(notes.offsets[row + 1])
            pieces.append(notes.vectors[start:end])
            owners.append(torch.full((end - start,), flat, dtype=torch.long))
        dim = notes.vectors.shape[1] if notes is not None else 1
        out["segments"] = torch.cat(pieces).float() if pieces else torch.zeros(0, dim)
        out["segment_visit"] = torch.cat(owners) if owners else torch.zeros(0, dtype=torch.long)
    return {**out, "has_note": has_note, "gap": gap, "age": age, "present": present, "targets": targets, "valid": valid}


def model_inputs(batch: dict, device: torch.device) -> dict:
    def move(value):
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value.to(device) if isinstance(value, torch.Tensor) else value

    return {k: move(batch[k]) for k in ("tokens", "offsets", "segments", "segment_visit", "has_note", "gap", "age",
                                        "present", "note_tokens")}


@torch.no_grad()
def score_split(model: TrajectoryModel, data: SplitData, notes: NotePieces | None, device: torch.device,
                batch_size: int = 64) -> np.ndarray:
    """Sigmoid scores [n_samples, n_categories] in sample order."""
    model.eval()
    out = np.zeros(data.y.shape, dtype=np.float32)
    for i in range(0, len(data.windows), batch_size):
        windows = data.windows[i:i + batch_size]
        batch = collate(windows, notes, data.y.shape[1])
        probs = torch.sigmoid(model(**model_inputs(batch, device)).float()).cpu().numpy()
        for b, w in enumerate(windows):
            for j in range(1, len(w.sample_ids)):
                out[w.sample_ids[j]] = probs[b, j - 1]
    return out


def baseline_scores(name: str, data: SplitData, prior: np.ndarray) -> np.ndarray:
    """Scores of a baseline (module docstring); `prior` in [0, 1) breaks ties by training frequency."""
    scores = np.tile(prior.astype(np.float32), (len(data.history), 1))
    if name == "population":
        return scores
    for i, past in enumerate(data.history):
        if name == "repeat_last":
            scores[i, past[-1]] += 1.0
        else:  # patient_frequent
            for cats in past:
                scores[i, cats] += 1.0
    return scores


def variant_config(cfg: TrajectoryConfig, inputs: str) -> dict:
    """What the model of one input set depends on, its config signature (`cmbert.core.loop.run_signature`): the
    config with this input set as `inputs`, and the dataset's prepare report. Not the other input sets, the
    baselines or the bootstrap (the report's), nor where `out` is."""
    config = cfg.to_dict()
    for key in ("out", "baselines", "bootstrap_resamples"):
        config.pop(key)
    config["inputs"] = inputs
    report = Path(cfg.data) / "report.json"
    config["dataset_report_sha256"] = hashlib.sha256(report.read_bytes()).hexdigest() if report.is_file() else None
    return config


def train_variant(cfg: TrajectoryConfig, inputs: str, meta_base: dict, prior: np.ndarray,
                  title_vectors: np.ndarray | None, data: dict[str, SplitData], notes: NotePieces | NoteTokens,
                  device: torch.device, dtype: torch.dtype, out: Path, config: dict) -> dict:
    """Train one input set in `out` with the core loop (`cmbert.core.loop`: early stopping on validation, resume
    from the checkpoint a killed run left, refused when another config wrote it); returns its result with val/test
    scores, and writes scores.npz and result.json (last: the set is finished). With `NoteTokens`
    (model.finetune_encoder) the note encoder trains too, at train.encoder_lr; validation and test read notes
    through the encoder as it is at that point (pieces recomputed without gradients). `config`: `variant_config`."""
    t = cfg.train
    torch.manual_seed(t.seed)
    generator = torch.Generator().manual_seed(t.seed)  # note dropout's draws; checkpoints keep its state
    meta = TrajectoryMeta(inputs=inputs, **meta_base)
    reads_notes = meta.uses_notes
    finetune = reads_notes and isinstance(notes, NoteTokens)
    note_encoder = tokenizer = None
    if finetune:
        note_encoder, tokenizer = load_encoder(cfg.model.init_from, device, trainable=True)
        prune_layers(note_encoder, cfg.model.prune)
        if cfg.model.lora.enabled:
            apply_lora(note_encoder, cfg.model.lora)
        if cfg.model.gradient_checkpointing:
            enable_checkpointing(note_encoder)
        meta.finetune_encoder = True
    prior_log_odds = torch.from_numpy(np.log(prior / (1 - prior))).float()
    model = TrajectoryModel(meta, prior_log_odds, note_encoder, tokenizer)
    if title_vectors is not None and meta.uses_codes:
        model.init_code_embeddings(title_vectors)
    model.to(device)
    encoder_ids = {id(p) for p in note_encoder.parameters()} if finetune else set()
    groups = [{"name": "model", "params": [p for p in model.parameters() if id(p) not in encoder_ids], "lr": t.lr}]
    if finetune:
        groups.append({"name": "encoder", "params": [p for p in note_encoder.parameters() if p.requires_grad],
                       "lr": cfg.model.lora.lr if cfg.model.lora.enabled else t.encoder_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=t.weight_decay)
    windows = data["train"].windows
    shape = t.schedule if t.schedule != "auto" else "linear" if finetune else "constant"
    make_schedule = linear_schedule if shape == "linear" else constant_schedule
    scheduler, total_steps = make_schedule(optimizer, t, len(windows))
    name = f"trajectory {inputs}"
    state = resume(out, model, optimizer, scheduler, config, device, name, enabled=t.resume,
                   generators={"note_dropout": generator})
    logger = open_run_log(out, config, cfg.logging, state)
    trainable = trainable_summary(model)  # as trained: with the note encoder (its LoRA adapters) when fine-tuned
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    n_categories = data["train"].y.shape[1]
    train_notes = notes if reads_notes else None

    def scoring_notes(encoder, splits: tuple[str, ...]) -> NotePieces | None:
        """What scoring reads: the cached pieces, or the pieces of these splits' notes by `encoder` as it is now."""
        if not reads_notes or not isinstance(notes, NoteTokens):
            return train_notes
        encoder.eval()
        rows = {r for split in splits for w in data[split].windows for r in w.note_rows if r >= 0}
        vectors, offsets = segments_of_tokens(encoder, notes.notes, notes.chunk_length, meta.segment_tokens,
                                              rows=rows, dtype=dtype)
        return NotePieces(torch.from_numpy(vectors), offsets)

    def batches(epoch: int) -> list[np.ndarray]:
        """The windows of each batch: epoch e takes the e-th permutation of one generator seeded once (the order this
        recipe has always trained in), replayed from the seed so that it depends on the epoch alone."""
        rng = np.random.default_rng(t.seed)
        for _ in range(epoch):
            rng.permutation(len(windows))
        order = rng.permutation(len(windows))
        return [order[i:i + t.batch_size] for i in range(0, len(order), t.batch_size)]

    def step_loss(idx: np.ndarray) -> torch.Tensor:
        batch = collate([windows[j] for j in idx], train_notes, n_categories, t.note_dropout, generator)
        logits = model(**model_inputs(batch, device)).float()
        valid = batch["valid"].to(device)
        return loss_fn(logits, batch["targets"].to(device)).sum(-1)[valid].mean()

    def validate() -> tuple[float, dict, dict]:
        val = ranking_metrics(data["val"].y, score_split(model, data["val"], scoring_notes(note_encoder, ("val",)),
                                                         device))
        return val[t.select_metric], {}, {k: val[k] for k in HISTORY_METRICS}

    # Autocast only for the note encoder: the visit model is small and trains in fp32.
    state = train_epochs(model, optimizer, scheduler, state, t, total_steps, out=out, config=config, device=device,
                         dtype=dtype if finetune else torch.float32, logger=logger,
                         log_every=cfg.logging.every_steps, name=name, metric=t.select_metric, step_loss=step_loss,
                         validate=validate, batches=batches, generators={"note_dropout": generator})
    # The loop loaded the best epoch's weights; scoring reads them back from the model folder, as `predict` does.
    model.save(out / "model")
    model = TrajectoryModel.load(out / "model", device)
    best_encoder = load_encoder(model.note_encoder_folder(out / "model"), device)[0] if finetune else None
    pieces = scoring_notes(best_encoder, ("val", "test"))
    scores = {split: score_split(model, data[split], pieces, device) for split in ("val", "test")}
    best_epoch = state["best_epoch"] + 1
    # Provenance in the model folder: what trained it and how it scored, beside the weights.
    model.meta.training = {"config": cfg.to_dict(), "dataset": str(Path(cfg.data).resolve()), "best_epoch": best_epoch,
                           "val": ranking_metrics(data["val"].y, scores["val"]), "git_sha": provenance(device)["git_sha"]}
    model.save(out / "model")
    history = [{"epoch": h["epoch"], "loss": round(h["loss"], 4), **{k: round(h[k], 4) for k in HISTORY_METRICS}}
               for h in state["history"]]
    result = {"kind": "model", "inputs": inputs, "dir": str(out / "model"), "best_epoch": best_epoch,
              "epochs_run": state["epoch"], "steps": state["step"], "schedule": shape, "history": history,
              "train_seconds": round(state["seconds"], 1),
              "parameters": sum(p.numel() for p in model.parameters())
              + (sum(p.numel() for p in best_encoder.parameters()) if finetune else 0), "trainable": trainable}
    np.savez(out / "scores.npz", **scores)
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")  # last: marks the input set finished
    remove_checkpoints(out)
    return {**result, "scores": scores}


def _history_notes(cfg: TrajectoryConfig, dataset: Path, all_patients: list[Patient], device: torch.device,
                   dtype: torch.dtype, encoder) -> tuple[dict[str, int], NotePieces | NoteTokens]:
    """Every note a history reads (not the patients' last notes: nothing follows them), by row: the frozen encoder's
    pieces (cached), or their token ids when the encoder is fine-tuned with the model."""
    wanted = {v.note_id for p in all_patients for v in p.visits[:-1] if v.note_id is not None}
    ids, texts = [], []
    for note_id, text in read_notes(dataset, wanted):
        ids.append(note_id)
        texts.append(text)
    rows = {note_id: row for row, note_id in enumerate(ids)}
    m = cfg.model
    if m.finetune_encoder:
        model, tokenizer = encoder
        print(f"tokenizing {len(texts):,} notes for {m.init_from} (fine-tuned with the visit model)", flush=True)
        return rows, NoteTokens(tokenize_notes(tokenizer, texts, m.note_max_tokens), m.chunk_length,
                                model.config.cls_token_id, model.config.sep_token_id)
    print(f"embedding {len(texts):,} notes with the frozen encoder {m.init_from} (cached in {cfg.out}/cache)",
          flush=True)
    vectors, offsets = cached_embeddings(Path(cfg.out) / "cache", m.init_from, texts, m.note_max_tokens,
                                         m.chunk_length, "mean", device, dtype, progress=True, encoder=encoder,
                                         segment_tokens=m.segment_tokens)
    return rows, NotePieces(torch.from_numpy(vectors), offsets)


def token_titles(tokens: list[str], category_names: dict[str, str]) -> list[str]:
    """The text the encoder reads for each input token's title init (the token itself when no title is known)."""
    systems = {"9": "icd9cm", "10": "icd10cm", "P9": "icd9pcs", "P10": "icd10pcs"}
    out = []
    for token in tokens:
        prefix, _, code = token.partition(":")
        if prefix == "C":
            out.append(category_names.get(code, code))
        elif prefix in systems:
            out.append(titles(systems[prefix]).get(code, code))
        else:
            out.append(token)
    return out


def main(cfg: TrajectoryConfig) -> dict:
    """Train every input set of `cfg.inputs`, score the baselines, write the report; returns it."""
    out, dataset = Path(cfg.out), Path(cfg.data)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    device, dtype = device_and_dtype(cfg.precision, cfg.device)
    categories = read_categories(dataset)
    category_list = [c["id"] for c in categories["categories"]]
    category_names = {c["id"]: c["name"] for c in categories["categories"]}
    category_ids = {c: i for i, c in enumerate(category_list)}
    patients = {split: list(read_patients(dataset, split)) for split in SPLITS}
    for split in SPLITS:
        if not patients[split]:
            raise UserError(f"{dataset}: the {split} split has no patients; prepare a larger dataset")
    m = cfg.model
    tokens = build_vocabulary(patients["train"], m.min_code_count)
    token_ids = {tok: i for i, tok in enumerate(tokens)}

    uses_encoder = bool(m.init_from) and (any(i in ("both", "notes") for i in cfg.inputs) or m.title_init)
    encoder = load_encoder(m.init_from, device) if uses_encoder else None
    note_rows, notes = {}, NotePieces.empty()
    if any(i in ("both", "notes") for i in cfg.inputs):
        note_rows, notes = _history_notes(cfg, dataset, [p for s in SPLITS for p in patients[s]], device, dtype,
                                          encoder)
    note_dim = encoder[0].config.hidden_size if encoder is not None else notes.vectors.shape[1]
    title_vectors = None
    if m.title_init and encoder is not None:
        title_vectors = cached_embeddings(out / "cache", m.init_from, token_titles(tokens, category_names), 128,
                                          min(m.chunk_length, 256), "mean", device, dtype, encoder=encoder)
    data = {split: build_split(patients[split], token_ids, category_ids, note_rows, m.max_visits,
                               exact=split != "train") for split in SPLITS}
    train_counts = np.array([c["train_visits"] for c in categories["categories"]], dtype=np.float64)
    n_train_visits = sum(len(p.visits) for p in patients["train"])
    prior = (train_counts + 0.5) / (n_train_visits + 1.0)  # smoothed: a category absent from train keeps a finite bias
    print(f"{len(category_list)} {categories['vocabulary']} categories, {len(tokens):,} input tokens; samples: " +
          ", ".join(f"{s} {len(data[s].y):,}" for s in SPLITS), flush=True)

    meta_base = {"categories": category_list, "category_names": [category_names[c] for c in category_list],
                 "tokens": tokens, "note_dim": note_dim, "hidden_size": m.hidden_size, "layers": m.layers,
                 "heads": m.heads, "dropout": m.dropout, "max_visits": m.max_visits,
                 "encoder": str(Path(m.init_from).resolve()) if m.init_from else None,
                 "encoder_hash": model_hash(m.init_from) if m.init_from else None, "note_max_tokens": m.note_max_tokens,
                 "chunk_length": m.chunk_length, "segment_tokens": m.segment_tokens,
                 "note_queries": m.note_queries, "vocabulary": categories["vocabulary"]}
    systems: dict[str, dict] = {}
    # A rerun of the same command reuses every input set that finished and resumes the one a kill interrupted; a
    # finished set or a checkpoint that another config wrote is refused.
    for inputs in cfg.inputs:
        folder, config = out / inputs, variant_config(cfg, inputs)
        result = finished_report(folder, config, f"trajectory {inputs}", report="result.json")
        if result is not None:
            with np.load(folder / "scores.npz") as scores:
                result["scores"] = {split: scores[split] for split in ("val", "test")}
        else:
            result = train_variant(cfg, inputs, meta_base, prior, title_vectors, data, notes, device, dtype, folder,
                                   config)
        systems[f"model:{inputs}"] = result
    for name in cfg.baselines:
        systems[f"baseline:{name}"] = {"kind": "baseline", "scores": {
            split: baseline_scores(name, data[split], prior) for split in ("val", "test")}}
    for system in systems.values():
        system["val"] = ranking_metrics(data["val"].y, system["scores"]["val"])
        system["test"] = ranking_metrics(data["test"].y, system["scores"]["test"])
    return write_report(cfg, out, categories, data, systems, device)


def write_report(cfg: TrajectoryConfig, out: Path, categories: dict, data: dict[str, SplitData],
                 systems: dict[str, dict], device: torch.device) -> dict:
    y = data["test"].y
    reference = next((n for n in ("model:both", "model:notes") if n in systems), None)
    comparisons = []
    if reference is not None and cfg.bootstrap_resamples:
        for other in systems:
            if other == reference:
                continue
            for metric in REPORT_METRICS:
                comparisons.append({"system_a": reference, "system_b": other, **paired_bootstrap(
                    y, systems[reference]["scores"]["test"], systems[other]["scores"]["test"], metric,
                    cfg.bootstrap_resamples, cfg.train.seed)})
    bar = None
    # The bar: the model that reads notes against codes alone and every baseline, so only when those ran.
    if reference is not None and "model:codes" in systems and any(n.startswith("baseline:") for n in systems):
        others = [n for n in systems if n != reference and n != "model:notes"]
        bar = {"system": reference, "metrics": list(REPORT_METRICS), "beats": {
            other: {metric: systems[reference]["test"][metric] > systems[other]["test"][metric]
                    for metric in REPORT_METRICS} for other in others}}
        bar["met"] = all(all(v.values()) for v in bar["beats"].values())
    png = plot_comparison({name: s["test"] for name, s in systems.items()}, out / "comparison.png",
                          title=f"next-visit {categories['vocabulary']} categories, test split")
    for name, system in systems.items():
        np.save(out / f"test_scores_{name.replace(':', '_')}.npy", system["scores"]["test"])
    report = {
        "dataset": str(Path(cfg.data).resolve()), "vocabulary": categories["vocabulary"],
        "categories": len(categories["categories"]),
        "samples": {split: int(len(data[split].y)) for split in SPLITS},
        "patients": {split: len(data[split].patients) for split in SPLITS},
        "systems": {name: {k: v for k, v in s.items() if k != "scores"} for name, s in systems.items()},
        "comparisons": comparisons, "quality_bar": bar, "plot": str(png),
        "config": cfg.to_dict(), "provenance": provenance(device),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def format_table(report: dict) -> str:
    columns = ("recall@10", "recall@20", "recall@30", "precision@20", "map@20", "mar@20", "mar@40", "ndcg@20",
               "auprc_micro")
    lines = [f"test, {report['samples']['test']:,} samples   " + " ".join(f"{c:>12s}" for c in columns)]
    for name, system in report["systems"].items():
        lines.append(f"{name:28s} " + " ".join(f"{100 * system['test'][c]:12.1f}" for c in columns))
    if report["quality_bar"] is not None:
        lines.append(f"{report['quality_bar']['system']} beats codes only and every baseline on recall@20 and MAR@20: "
                     f"{'yes' if report['quality_bar']['met'] else 'no'}")
    return "\n".join(lines)
