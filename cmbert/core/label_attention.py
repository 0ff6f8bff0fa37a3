"""ICD coding models and the model folder they live in.

Two heads on the same encoder (`cmbert.modeling.ModernBertModel`, which loads any transformers ModernBERT folder):

- `laat`: label-wise attention over every token of the note (LAAT, Vu et al. 2020; PLM-ICD, Huang et al. 2022).
  Per label l: a_l = softmax_t(q_l . z_t) with z_t = tanh(LayerNorm(W h_t)), v_l = sum_t a_l,t h_t,
  logit_l = w_l . v_l + b_l. A note longer than the context is cut into chunks that the encoder reads
  independently (PLM-ICD's segment pooling, with chunks of up to 8,192 tokens instead of 128); the attention then runs
  over the tokens of all of the note's chunks at once.
  The softmax instability Edin et al. report (PLM-ICD/LAAT losses diverging as attention scores overflow) is handled
  by bounding the scores rather than shrinking them: LayerNorm before the tanh keeps the keys' scale fixed whatever
  the encoder's output scale, the tanh keeps each key coordinate in [-1, 1] (so |score| <= ||q_l||_1, finite in
  fp32), and scores, mask and softmax are computed in fp32 with padding masked to -inf (never the fp16-unsafe -1e4; and
  no padded position is ever attended: PLM-ICD's collate padded its mask with 1s). The scores are not divided by
  sqrt(d) as dot-product attention's are: with keys bounded, that caps every score at ||q_l||_2 (about 8 at
  initialisation), too flat for one label to pick its few tokens out of thousands, and the head then barely learns
  while the encoder is frozen (validation mAP 0.31 -> 0.32 over the two warm-up epochs of the 300-patient demo data,
  against 0.44 -> 0.54 unscaled; BENCHMARKS.md).
- `pooled`: transformers' own `ModernBertForSequenceClassification` (problem_type multi_label_classification) on the
  first `max_length` tokens, so `AutoModelForSequenceClassification.from_pretrained(folder)` runs it unchanged.

Label queries can start from the encoder's reading of each code's title ("Acute on chronic systolic heart failure"):
q_l = k * TITLE_SCORE / ||k||^2 with k = z(mean of the title's token states), so at step 0 each label already leans
towards the tokens that resemble its title (they score TITLE_SCORE) without being locked onto them. With
`queries_per_label` K > 1 a label has K queries, each with its own attention and output weights, and its logit sums
their terms: logit_l = sum_k w_l,k . v_l,k + b_l (K = 1 is PLM-ICD). Queries 1..K-1 start the same way on the
n-grams that mark the code in the training notes ("COPD", "s/p CABG"; `cmbert.finetune.icd.terms`), because a single query
never learns a surface form it gives no attention to. Summing, not one softmax over each token's best match: a shared
softmax pools one place of the note, so a note whose problem list says "Smoking history: counseled on smoking
cessation" and whose history says "current smoker" was read at the first phrase alone (F17.210 missed, BENCHMARKS.md);
separate queries add up the evidence as a linear model over n-grams does. Output biases start at each code's training
log-odds, so the first steps are not spent learning priors.

Model folder (what `save` writes, `IcdModel.load` and `cmbert predict icd` read; the robustness audit reuses it):
    config.json, model.safetensors   a stock transformers ModernBERT: ModernBertModel for `laat` (AutoModel loads
                                     it), ModernBertForSequenceClassification for `pooled` (with id2label = codes)
    tokenizer.json, tokenizer_config.json, special_tokens_map.json
    label_attention.safetensors      `laat` only: proj.weight, norm.weight, norm.bias, queries, weights, bias
    icd.json                         format, head, labels [{code, title, kind, train_count}], threshold (one global
                                     decision threshold tuned on validation), icd_version, max_length, max_chunks,
                                     preprocess / max_words (the text rules applied before tokenizing), attention_dim,
                                     queries_per_label (`queries`, `weights`: L x K rows, label-major), and `training`
                                     (config, metrics, provenance)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cmbert.core.errors import MissingInput, UserError
from cmbert.core.lora import merged_copy
from cmbert.core.notes import TokenizedNotes, collate, preprocess_text, token_budget_batches, tokenize_notes
from cmbert.core.pruning import PruneSettings, prune_layers
from cmbert.core.runtime import device_and_dtype

FORMAT = "cmbert-icd/1"
ICD_JSON = "icd.json"
HEAD_FILE = "label_attention.safetensors"
HEADS = ("laat", "pooled")
# Score of a title-like token at initialisation (see `IcdModel.from_encoder`): 8 (~ln of a note's length) was too flat
# for the demo's short schedule (BENCHMARKS.md: demo test micro-F1 27.9 at 8, 43.9 at 20, 45.4 at 50).
TITLE_SCORE = 20.0


@dataclass
class IcdMeta:
    """Everything besides weights that turns a note into codes; stored as icd.json."""

    head: str
    codes: list[str]
    titles: list[str]
    kinds: list[str]
    train_counts: list[int]
    icd_version: int
    max_length: int  # tokens per chunk, [CLS] and [SEP] included
    max_chunks: int  # chunks read per note; the rest of a longer note is cut (counted in reports)
    preprocess: str = "none"  # "edin": the text rules of cmbert.finetune.icd.data, applied at training and prediction
    max_words: int | None = None
    attention_dim: int = 512
    queries_per_label: int = 1  # attention queries per label, their terms summed (finetune/icd/terms.py)
    threshold: float = 0.5
    format: str = FORMAT
    training: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        meta = asdict(self)
        labels = [{"code": c, "title": t, "kind": k, "train_count": n} for c, t, k, n in
                  zip(meta.pop("codes"), meta.pop("titles"), meta.pop("kinds"), meta.pop("train_counts"), strict=True)]
        return {"format": meta.pop("format"), "head": meta.pop("head"), "labels": labels, **meta}

    @classmethod
    def from_json(cls, data: dict, where: str) -> IcdMeta:
        if data.get("format") != FORMAT:
            raise UserError(f"{where}: not an ICD model folder of format {FORMAT} (found {data.get('format')!r})")
        data = dict(data)
        labels = data.pop("labels")
        return cls(codes=[x["code"] for x in labels], titles=[x["title"] for x in labels],
                   kinds=[x["kind"] for x in labels], train_counts=[int(x["train_count"]) for x in labels], **data)


class LabelAttention(nn.Module):
    """The LAAT/PLM-ICD head over padded token states [B, T, H] -> logits [B, L] (see the module docstring)."""

    def __init__(self, hidden_size: int, num_labels: int, attention_dim: int, queries_per_label: int = 1):
        super().__init__()
        self.num_labels = num_labels
        self.proj = nn.Linear(hidden_size, attention_dim, bias=False)
        self.norm = nn.LayerNorm(attention_dim)
        # Row l * queries_per_label + k is query k of label l, with its own output weights (one query per label:
        # PLM-ICD's [L, d_a] and [L, H] as they are).
        self.queries = nn.Parameter(torch.empty(num_labels * queries_per_label, attention_dim))
        self.weights = nn.Parameter(torch.empty(num_labels * queries_per_label, hidden_size))
        self.bias = nn.Parameter(torch.zeros(num_labels))
        nn.init.normal_(self.proj.weight, std=hidden_size**-0.5)
        # Scores start near 0 (attention near uniform) unless title_init gives each query its title's key.
        nn.init.normal_(self.queries, std=attention_dim**-0.5)
        # A label's logit sums its queries' terms: the sum starts at the spread one query's term would have.
        nn.init.normal_(self.weights, std=(hidden_size * queries_per_label) ** -0.5)

    def keys(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.norm(self.proj(h)))

    def attention(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, L * K, T] attention of every query over the note's tokens, fp32, exactly 0 at padding."""
        scores = torch.einsum("btd,qd->bqt", self.keys(h).float(), self.queries.float())
        return scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attn = self.attention(h, mask)
        per_query = torch.einsum("bqt,bth->bqh", attn.to(h.dtype), h)  # [B, L * K, H]: one note vector per query
        terms = (per_query * self.weights.to(h.dtype)).sum(-1).float()
        return terms.unflatten(1, (self.num_labels, -1)).sum(-1) + self.bias.float()


def prior_log_odds(train_counts: list[int], n_train: int) -> torch.Tensor:
    """Each code's training log-odds (smoothed: a code no training note has still gets a finite bias)."""
    p = (np.asarray(train_counts, dtype=np.float64) + 0.5) / (n_train + 1.0)
    return torch.tensor(np.log(p / (1 - p)), dtype=torch.float32)


class IcdModel(nn.Module):
    """An encoder and an ICD head. `forward` takes a packed batch of note chunks (see `cmbert.core.notes`)."""

    def __init__(self, encoder: nn.Module, meta: IcdMeta):
        super().__init__()
        if meta.head not in HEADS:
            raise UserError(f"head must be one of {HEADS}, not {meta.head!r}")
        if meta.head == "pooled" and meta.max_chunks != 1:
            raise UserError("the pooled head reads one chunk per note (transformers' classifier): set max_chunks: 1")
        self.meta = meta
        self.encoder = encoder  # ModernBertModel (laat) or ModernBertForSequenceClassification (pooled)
        if meta.head == "laat":
            self.head = LabelAttention(encoder.config.hidden_size, len(meta.codes), meta.attention_dim,
                                       meta.queries_per_label)

    @property
    def config(self):
        return self.encoder.config

    # ------------------------------------------------------------------------------------------------ building

    @classmethod
    def from_encoder(cls, folder: str | Path, meta: IcdMeta, n_train: int, tokenizer=None,
                     title_init: bool = True, terms: list[list[list[int]]] | None = None,
                     prune: PruneSettings | None = None) -> IcdModel:
        """A fresh head on the encoder of any transformers ModernBERT folder (MLM, base or classifier weights),
        with the layers `prune` chooses dropped first (the head starts from the pruned encoder's reading of titles).

        `terms`: per code, token-id phrases (`cmbert.finetune.icd.terms.evidence_terms`) for its queries 1, 2, ...; a query
        with no phrase starts as a copy of query 0 (the title's, with `title_init`)."""
        from transformers import ModernBertConfig

        from cmbert.core.embeddings import quiet_from_pretrained
        from cmbert.modeling import ModernBertForSequenceClassification, ModernBertModel

        config = ModernBertConfig.from_pretrained(folder)
        if meta.max_length > config.max_position_embeddings:
            raise UserError(f"max_length {meta.max_length} exceeds {folder}'s context "
                            f"({config.max_position_embeddings} tokens)")
        if meta.head == "pooled":
            config.num_labels = len(meta.codes)
            config.id2label = dict(enumerate(meta.codes))
            config.label2id = {c: i for i, c in enumerate(meta.codes)}
            config.problem_type = "multi_label_classification"
        encoder_cls = ModernBertForSequenceClassification if meta.head == "pooled" else ModernBertModel
        encoder = quiet_from_pretrained(encoder_cls, folder, config=config)
        if prune is not None:
            prune_layers(encoder, prune)
        model = cls(encoder, meta)
        bias = prior_log_odds(meta.train_counts, n_train)
        with torch.no_grad():
            if meta.head == "pooled":
                encoder.classifier.bias.copy_(bias)
            else:
                model.head.bias.copy_(bias)
                queries = model.head.queries.view(len(meta.codes), meta.queries_per_label, -1)
                if title_init and tokenizer is not None:
                    texts = [title or code for title, code in zip(meta.titles, meta.codes, strict=True)]
                    ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=62)["input_ids"]
                    queries.copy_(model.phrase_queries(ids)[:, None, :].expand_as(queries))
                for label, phrases in enumerate(terms or []):
                    if phrases := phrases[:meta.queries_per_label - 1]:
                        queries[label, 1:1 + len(phrases)] = model.phrase_queries(phrases)
        return model

    @torch.no_grad()
    def phrase_queries(self, phrases: list[list[int]], batch_size: int = 256) -> torch.Tensor:
        """Queries [n, d_a] under which a token that reads like the phrase (token ids, no specials) scores TITLE_SCORE.

        q = k * TITLE_SCORE / ||k||^2 with k the key of the phrase's mean final state ([CLS] phrase [SEP], read alone).
        Unscaled (q = k), that score is ||k||^2, ~0.4 d (50 at d = 128): a one-hot softmax over a note's few thousand
        tokens, which leaves a label whose title reads unlike the notes (ICD-10-PCS: "Drainage of Bladder with
        Drainage Device, Via Natural or Artificial Opening") locked onto the wrong tokens with no gradient to move it.
        """
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        cls_id, sep_id, pad_id = self.config.cls_token_id, self.config.sep_token_id, self.config.pad_token_id
        out = []
        for start in range(0, len(phrases), batch_size):
            rows = [[cls_id, *p, sep_id] for p in phrases[start:start + batch_size]]
            width = max(map(len, rows))
            input_ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], device=device)
            lengths = torch.tensor([len(r) for r in rows], device=device)
            mask = (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()
            h = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
            keys = self.head.keys((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
            out.append(keys * (TITLE_SCORE / keys.pow(2).sum(-1, keepdim=True)))
        self.train(was_training)
        return torch.cat(out)

    # ------------------------------------------------------------------------------------------------- running

    def forward(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                note_chunks: torch.Tensor) -> torch.Tensor:
        """Packed chunks (1-D `input_ids`, `cu_seqlens` over chunks) and `note_chunks` (cumulative chunk count per
        note, [n_notes + 1]) -> logits [n_notes, n_codes], fp32."""
        if self.meta.head == "pooled":
            return self.encoder(input_ids=input_ids, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen).logits.float()
        return self.classify(*self.note_states(input_ids, cu_seqlens, max_seqlen, note_chunks))

    def note_states(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                    note_chunks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's final states of every token [total, H] and each note's token range (int32 [n_notes + 1])."""
        h, _, _ = self.encoder.encode(input_ids=input_ids, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
        # A note's chunks are contiguous in the packed stream, so its tokens run from the start of its first chunk
        # to the end of its last.
        return h, cu_seqlens.to(h.device).long()[note_chunks.to(h.device)].to(torch.int32)

    def classify(self, h: torch.Tensor, note_cu: torch.Tensor) -> torch.Tensor:
        """The label attention over each note's token states (re-padded per note, not per chunk)."""
        from cmbert.modeling.model import Unpadded

        lengths = note_cu[1:] - note_cu[:-1]
        n_notes, longest = lengths.numel(), int(lengths.max())
        mask = torch.arange(longest, device=h.device)[None, :] < lengths[:, None]
        notes = Unpadded(note_cu, longest, torch.nonzero(mask.flatten()).flatten(), (n_notes, longest))
        return self.head(notes.pad(h), mask)

    # -------------------------------------------------------------------------------------------- saving, loading

    def save(self, folder: str | Path, tokenizer) -> Path:
        from cmbert.core.tokenizer_files import save_tokenizer

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        merged_copy(self.encoder).save_pretrained(folder)  # LoRA adapters folded in: a stock ModernBERT folder
        save_tokenizer(tokenizer, folder)
        if self.meta.head == "laat":
            save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, folder / HEAD_FILE)
        (folder / ICD_JSON).write_text(json.dumps(self.meta.to_json(), indent=1) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> tuple[IcdModel, object]:
        """(model in eval mode, tokenizer) from a folder `save` wrote."""
        from transformers import AutoTokenizer

        from cmbert.modeling import ModernBertForSequenceClassification, ModernBertModel

        folder = Path(folder)
        if not (folder / ICD_JSON).is_file():
            raise MissingInput(f"{folder}: no {ICD_JSON}; not an ICD model folder (see cmbert/core/label_attention.py)")
        meta = IcdMeta.from_json(json.loads((folder / ICD_JSON).read_text()), str(folder / ICD_JSON))
        encoder_cls = ModernBertForSequenceClassification if meta.head == "pooled" else ModernBertModel
        model = cls(encoder_cls.from_pretrained(folder), meta)
        if meta.head == "laat":
            model.head.load_state_dict(load_file(folder / HEAD_FILE))
        return model.to(device).eval(), AutoTokenizer.from_pretrained(folder)


class StateCache:
    """The frozen encoder's final states of every token of a split's notes (16-bit, in memory), so epochs that train
    only the head (`train.head_warmup_epochs`) run the encoder once instead of once per epoch."""

    def __init__(self, model, notes: TokenizedNotes, tokens_per_batch: int, max_notes: int, device: torch.device,
                 dtype: torch.dtype):
        meta, config = model.meta, model.config
        pieces, lengths = [], np.zeros(len(notes), dtype=np.int64)
        order = []
        # The head reads them in the autocast dtype; CPU autocast rejects fp16 tensors, so bf16 runs keep bf16.
        store = torch.bfloat16 if dtype == torch.bfloat16 else torch.float16
        modes = {m: m.training for m in model.modules()}
        model.eval()
        with torch.no_grad():
            for idx in token_budget_batches(np.diff(notes.offsets), tokens_per_batch, max_notes):
                batch = collate([notes.note(i) for i in idx], meta.max_length, config.cls_token_id,
                                config.sep_token_id)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                    h, note_cu = model.note_states(batch["input_ids"].to(device), batch["cu_seqlens"].to(device),
                                                   batch["max_seqlen"], batch["note_chunks"].to(device))
                pieces.append(h.to(store))
                lengths[idx] = (note_cu[1:] - note_cu[:-1]).cpu().numpy()
                order += list(idx)
        for m, training in modes.items():
            m.train(training)
        # Notes were encoded in batch order; index them by note number.
        self.states = torch.cat(pieces)
        starts_in_order = np.concatenate(([0], np.cumsum(lengths[order])[:-1]))
        self.starts = np.zeros(len(notes), dtype=np.int64)
        self.starts[order] = starts_in_order
        self.lengths = lengths

    @staticmethod
    def nbytes(notes: TokenizedNotes, max_length: int, hidden_size: int) -> int:
        """Memory the cache of these notes would take (each chunk adds [CLS] and [SEP])."""
        tokens = np.diff(notes.offsets)
        chunks = np.maximum(1, -(-tokens // (max_length - 2)))
        return int((tokens + 2 * chunks).sum()) * hidden_size * 2

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(states [total, H] 16-bit, note ranges int32 [len(idx) + 1]) of the given notes, as `note_states` gives."""
        h = torch.cat([self.states[self.starts[i]:self.starts[i] + self.lengths[i]] for i in idx])
        note_cu = torch.nn.functional.pad(torch.from_numpy(np.cumsum(self.lengths[idx])), (1, 0)).to(torch.int32)
        return h, note_cu.to(h.device)


@torch.no_grad()
def predict_scores(model: IcdModel, notes: TokenizedNotes, tokens_per_batch: int, max_notes: int,
                   device: torch.device, dtype: torch.dtype, cache: StateCache | None = None) -> np.ndarray:
    """Sigmoid scores [n_notes, n_codes] (float32), in the notes' order; from cached encoder states if given."""
    model.eval()
    lengths = np.diff(notes.offsets)
    cls_id, sep_id = model.config.cls_token_id, model.config.sep_token_id
    out = np.zeros((len(notes), len(model.meta.codes)), dtype=np.float32)
    for idx in token_budget_batches(lengths, tokens_per_batch, max_notes):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            if cache is not None:
                h, note_cu = cache.batch(idx)
                logits = model.classify(h.to(dtype), note_cu)
            else:
                batch = collate([notes.note(i) for i in idx], model.meta.max_length, cls_id, sep_id)
                logits = model(batch["input_ids"].to(device), batch["cu_seqlens"].to(device), batch["max_seqlen"],
                               batch["note_chunks"].to(device))
        out[idx] = torch.sigmoid(logits.float()).cpu().numpy()
    return out


def predict(model_dir: str | Path, notes: Iterable, top_k: int | None = None, device: str = "auto",
            precision: str = "auto", notes_per_batch: int = 64, tokens_per_batch: int | None = None) -> Iterator[dict]:
    """Yield {"id", "codes": [{"code", "title", "score", "predicted"}]} per note, best score first.

    `notes`: an iterable of (id, text) pairs (`cmbert.data.inputs.NoteInput` is one) or plain strings (ids are then
    their positions); `cmbert.finetune.icd.predict.predict` also reads them from a file. Works through the notes in
    blocks, so a large stream never sits in memory whole.
    """
    if top_k is not None and top_k < 1:
        raise UserError("top_k must be >= 1")
    dev, dtype = device_and_dtype(precision, device)
    model, tokenizer = IcdModel.load(model_dir, dev)
    meta = model.meta
    tokens_per_batch = tokens_per_batch or max(meta.max_length, 16384)
    stream = ((n.id, n.text) if hasattr(n, "text") else tuple(n) if isinstance(n, tuple) else (str(i), n)
              for i, n in enumerate(notes))
    cut = meta.max_chunks * (meta.max_length - 2)
    block: list = []

    def run(block):
        texts = [preprocess_text(text, meta.preprocess, meta.max_words) for _, text in block]
        tokens = tokenize_notes(tokenizer, texts, cut)
        scores = predict_scores(model, tokens, tokens_per_batch, notes_per_batch, dev, dtype)
        for (note_id, _), row in zip(block, scores, strict=True):
            order = np.argsort(-row, kind="stable")
            chosen = order[:top_k] if top_k else order[row[order] > meta.threshold]
            yield {"id": note_id, "codes": [
                {"code": meta.codes[j], "title": meta.titles[j], "score": float(row[j]),
                 "predicted": bool(row[j] > meta.threshold)} for j in chosen]}

    for note in stream:
        block.append(note)
        if len(block) == notes_per_batch * 4:
            yield from run(block)
            block = []
    if block:
        yield from run(block)
