"""The visit-sequence transformer: a patient's past visits -> scores for every category of the next visit.

A visit embedding is the sum of
- its codes: the mean of the embeddings of its input tokens (its target categories "C:108", its raw diagnosis codes
  "10:I5023" and procedures "P10:0DTJ4ZZ"; tokens seen on fewer than `min_code_count` training visits share one "rare"
  embedding), started from the note encoder's reading of each token's title when `title_init`;
- its discharge note: the frozen encoder reads the whole note in context and gives one vector per `segment_tokens`
  piece (`cmbert.core.embeddings.embed_segments`); `note_queries` learned queries attend over the note's pieces and
  their read-outs are projected into the visit embedding (a learned "no note" vector when the visit has none). One
  mean vector per note would average a one-line finding ("HbA1c 6.2 %, prediabetes") away over thousands of tokens;
  attention keeps it;
- the time since the previous visit and the age at admission (log-spaced and 5-year buckets), and the visit's position.
`inputs` selects the ablation: "codes" drops the note term, "notes" the code term, "both" keeps both.

A causal transformer encoder (pre-LN) reads the visits in order; the state after visit t scores visit t+1's categories
with one linear layer whose bias starts at each category's training log-odds. With codes among the inputs, a history
term is added to each category's logit: (w_last[c] + a(h)) * [c was in visit t] + (w_freq[c] + b(h)) * (share of the
visible past visits with c), where a(h), b(h) come from the state. Chronic disease recurs, so "repeat the last visit"
is a strong baseline (BENCHMARKS.md); without this term a small model on a few thousand visits has to learn copying
through its embeddings and falls far behind it, and with it the state (notes included) decides how much the past
repeats. A patient is one sequence, so one pass trains on all its targets; no position sees a later visit, nor the
note of the visit it predicts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cmbert.core.errors import MissingInput
from cmbert.core.lora import merged_copy

# Days since the previous visit: bucket 0 is "first visit", then [0, 7), [7, 30), ... [1825, inf).
GAP_EDGES = (7.0, 30.0, 90.0, 180.0, 365.0, 730.0, 1825.0)
AGE_STEP, AGE_BUCKETS = 5.0, 21  # 0-4, 5-9, ... 100+; index AGE_BUCKETS is "unknown"
PAD, RARE = 0, 1  # input token ids
ENCODER_FOLDER = "encoder"  # a fine-tuned note encoder, inside the model folder


def gap_bucket(days: float | None) -> int:
    return 0 if days is None else 1 + int(np.searchsorted(GAP_EDGES, days, side="right"))


def age_bucket(age: float | None) -> int:
    return AGE_BUCKETS if age is None else min(int(max(age, 0.0) // AGE_STEP), AGE_BUCKETS - 1)


@dataclass
class TrajectoryMeta:
    """Everything besides the weights that a saved model needs (`trajectory.json`)."""

    inputs: str
    categories: list[str]
    category_names: list[str]
    tokens: list[str]  # input vocabulary; ids 0 and 1 are PAD and RARE
    note_dim: int
    hidden_size: int
    layers: int
    heads: int
    dropout: float
    max_visits: int
    encoder: str | None = None  # the note encoder's folder and hash (notes are embedded with it at prediction time)
    encoder_hash: str | None = None
    note_max_tokens: int = 8192
    chunk_length: int = 8192
    segment_tokens: int = 128
    note_queries: int = 4
    vocabulary: str = "ccs"
    training: dict | None = None  # the training config, dataset, best epoch and its validation metrics
    # The note encoder trained with the visit model (saved in the model folder's encoder/) instead of frozen.
    finetune_encoder: bool = False

    @classmethod
    def read(cls, folder: str | Path) -> TrajectoryMeta:
        """The meta of a saved model folder (its trajectory.json), without loading the weights."""
        path = Path(folder) / "trajectory.json"
        if not path.is_file():
            raise MissingInput(f"{folder}: no trajectory.json (a `cmbert finetune trajectory train` model folder "
                               "is expected, e.g. runs/trajectory/both/model)")
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    @property
    def uses_notes(self) -> bool:
        return self.inputs in ("both", "notes")

    @property
    def uses_codes(self) -> bool:
        return self.inputs in ("both", "codes")


class TrajectoryModel(nn.Module):
    def __init__(self, meta: TrajectoryMeta, prior_log_odds: torch.Tensor | None = None, note_encoder=None,
                 tokenizer=None):
        super().__init__()
        self.meta = meta
        # With `finetune_encoder`: the ModernBertModel that reads notes inside forward (and its tokenizer, saved
        # beside it); otherwise notes arrive as cached piece vectors.
        self.note_encoder = note_encoder
        self.tokenizer = tokenizer
        d = meta.hidden_size
        self.codes = nn.EmbeddingBag(len(meta.tokens), d, mode="mean", padding_idx=PAD)
        self.note_proj = nn.Sequential(nn.LayerNorm(meta.note_dim), nn.Linear(meta.note_dim, d))
        self.note_queries = nn.Parameter(torch.randn(meta.note_queries, d) * d ** -0.5)
        self.note_out = nn.Linear(meta.note_queries * d, d)
        self.no_note = nn.Parameter(torch.zeros(d))
        self.gap = nn.Embedding(len(GAP_EDGES) + 2, d)
        self.age = nn.Embedding(AGE_BUCKETS + 1, d)
        self.position = nn.Embedding(meta.max_visits + 1, d)
        self.input_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(meta.dropout)
        layer = nn.TransformerEncoderLayer(d, meta.heads, 4 * d, meta.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, meta.layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, len(meta.categories))
        n = len(meta.categories)
        self.repeat_last = nn.Parameter(torch.full((n,), 2.0))  # starts as "the last visit repeats"
        self.repeat_share = nn.Parameter(torch.full((n,), 1.0))
        self.repeat_gate = nn.Linear(d, 2)
        nn.init.zeros_(self.repeat_gate.weight)
        nn.init.zeros_(self.repeat_gate.bias)
        for embedding in (self.gap, self.age, self.position):
            nn.init.normal_(embedding.weight, std=0.02)
        nn.init.normal_(self.codes.weight, std=0.02)
        nn.init.zeros_(self.head.weight)  # start at the prior: the first gradients come from the history, not noise
        if prior_log_odds is not None:
            with torch.no_grad():
                self.head.bias.copy_(prior_log_odds)

    def init_code_embeddings(self, title_vectors: np.ndarray) -> None:
        """Code embeddings from the encoder's title embeddings [n_tokens, note_dim] (rows of PAD and RARE ignored):
        their top principal components, scaled to the random init's standard deviation."""
        x = title_vectors[2:] - title_vectors[2:].mean(0, keepdims=True)
        d = self.meta.hidden_size
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        projected = x @ vt[:d].T
        if projected.shape[1] < d:  # fewer tokens than dimensions: pad the rest with the random init
            projected = np.pad(projected, ((0, 0), (0, d - projected.shape[1])))
        projected *= 0.02 / max(float(projected.std()), 1e-8)
        with torch.no_grad():
            self.codes.weight[2:, :projected.shape[1]] = torch.from_numpy(projected).float()

    def read_notes(self, segments: torch.Tensor, segment_visit: torch.Tensor, n_visits: int) -> torch.Tensor:
        """Attention pooling of note pieces: segments [n, note_dim] belonging to visits segment_visit [n] (flat
        b*T+t) -> [n_visits, hidden] (zeros for visits without pieces; `has_note` masks those)."""
        d, q = self.meta.hidden_size, self.meta.note_queries
        proj = self.note_proj(segments)  # [n, d]
        scores = proj @ self.note_queries.t() * d ** -0.5  # [n, q]
        index = segment_visit.unsqueeze(1).expand(-1, q)
        top = torch.full((n_visits, q), float("-inf"), device=proj.device, dtype=scores.dtype)
        top = top.scatter_reduce(0, index, scores, "amax", include_self=True)
        weights = torch.exp(scores - top[segment_visit])  # softmax within each visit's note, per query
        total = torch.zeros(n_visits, q, device=proj.device, dtype=weights.dtype).index_add(0, segment_visit, weights)
        weights = weights / total[segment_visit]
        pooled = torch.zeros(n_visits, q, d, device=proj.device, dtype=proj.dtype)
        pooled = pooled.index_add(0, segment_visit, weights.unsqueeze(-1) * proj.unsqueeze(1))
        return self.note_out(pooled.flatten(1))

    def note_pieces(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                    note_chunks: torch.Tensor, note_visit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fine-tuned encoder's pieces of a batch's notes (packed chunks, `cmbert.core.notes.collate`), with
        gradients: the same pieces `cmbert.core.embeddings.embed_segments` gives a frozen encoder."""
        from cmbert.core.embeddings import piece_means

        states = self.note_encoder(input_ids=input_ids, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen).last_hidden_state
        lengths = cu_seqlens[note_chunks[1:].long()] - cu_seqlens[note_chunks[:-1].long()]
        segments, per_note = piece_means(states.float(), lengths, self.meta.segment_tokens)
        return segments, torch.repeat_interleave(note_visit, per_note)

    def forward(self, tokens: torch.Tensor, offsets: torch.Tensor, segments: torch.Tensor | None,
                segment_visit: torch.Tensor | None, has_note: torch.Tensor, gap: torch.Tensor, age: torch.Tensor,
                present: torch.Tensor, note_tokens: dict | None = None) -> torch.Tensor:
        """tokens [n] + offsets [B*T] (EmbeddingBag: visit b*T+t's tokens start at offsets[b*T+t]); segments
        [n_pieces, note_dim] of the notes of visits segment_visit [n_pieces] (flat b*T+t); has_note, gap, age [B, T];
        present [B, T, n_categories] (1 where visit t has the category) -> logits [B, T, n_categories] (position t
        scores visit t + 1). With a fine-tuned encoder the notes come as `note_tokens` (the arguments of
        `note_pieces`) instead of segments."""
        batch, length = gap.shape
        x = self.gap(gap) + self.age(age) + self.position(torch.arange(length, device=gap.device))
        if self.meta.uses_codes:
            x = x + self.codes(tokens, offsets).view(batch, length, -1)
        if self.meta.uses_notes:
            if note_tokens is not None:
                segments, segment_visit = self.note_pieces(**note_tokens)
            note = self.read_notes(segments, segment_visit, batch * length).view(batch, length, -1)
            x = x + torch.where(has_note.unsqueeze(-1), note, self.no_note)
        x = self.dropout(self.input_norm(x))
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=x.device, dtype=x.dtype)
        # Padding sits after each patient's last visit, so the causal mask already keeps real visits from seeing it.
        h = self.final_norm(self.encoder(x, mask=causal, is_causal=True))
        logits = self.head(h)
        if self.meta.uses_codes:
            share = present.cumsum(1) / torch.arange(1, length + 1, device=x.device, dtype=x.dtype).view(1, -1, 1)
            gate = self.repeat_gate(h)
            logits = (logits + (self.repeat_last + gate[..., :1]) * present
                      + (self.repeat_share + gate[..., 1:]) * share)
        return logits

    def save(self, folder: str | Path) -> None:
        """model.safetensors (the visit model) + trajectory.json; a fine-tuned note encoder goes to encoder/ as a
        stock transformers ModernBERT folder (with its tokenizer), which `AutoModel` loads."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.state_dict().items() if not k.startswith("note_encoder.")}
        save_file(state, str(folder / "model.safetensors"))
        if self.note_encoder is not None:
            merged_copy(self.note_encoder).save_pretrained(folder / ENCODER_FOLDER)  # adapters folded in
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(folder / ENCODER_FOLDER)
        (folder / "trajectory.json").write_text(json.dumps(asdict(self.meta), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu") -> TrajectoryModel:
        from safetensors.torch import load_file

        folder = Path(folder)
        model = cls(TrajectoryMeta.read(folder))
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        return model.to(device).eval()

    def note_encoder_folder(self, model_folder: str | Path, override: str | Path | None = None) -> str | None:
        """Where the encoder that reads this model's notes is: `override`, the model's own encoder/ (fine-tuned),
        or the frozen encoder it was trained with."""
        if override:
            return str(override)
        return str(Path(model_folder) / ENCODER_FOLDER) if self.meta.finetune_encoder else self.meta.encoder
