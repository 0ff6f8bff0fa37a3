"""ModernBERT, computed on unpadded tokens, with transformers' exact parameter names.

Architecture (Warner et al. 2024, "Smarter, Better, Faster, Longer"; transformers `modernbert`):
- token embeddings -> LayerNorm (no bias) -> dropout; no position table: RoPE inside attention;
- pre-norm blocks `h += attn(attn_norm(h)); h += mlp(mlp_norm(h))`; layer 0 has no attn_norm (the embedding norm
  already normalised its input), then `final_norm`;
- attention: fused Wqkv, non-interleaved ("rotate_half") RoPE over the full head dim, global layers (theta 160k) and
  sliding-window layers (theta 10k) that see +-local_attention//2 tokens, as `config.layer_types` lists them;
- GeGLU MLP: `Wo(gelu(x) * gate)` where `x, gate = Wi(h).chunk(2)`;
- MLM head: dense -> act -> LayerNorm, then a decoder tied to the token embeddings (with bias).

Unlike transformers (which since v5 runs padded with dense S x S sliding masks), every forward here removes padding
first: the batch becomes one stream of `total` real tokens with document boundaries `cu_seqlens`, rotary positions
restart at each document, no token attends across a boundary (modeling/attention.py), and the MLM head runs only on
labelled positions. Outputs are padded back to [batch, seq, ...] only for padded callers.

The config class is `transformers.ModernBertConfig`, and the state dict keys are those of
`transformers.ModernBertForMaskedLM` / `ModernBertForSequenceClassification` / `ModernBertForTokenClassification` /
`ModernBertForQuestionAnswering`, so checkpoints move freely both ways. Any such config works, whatever
`attn_implementation` it names: transformers' attention functions are never used here, so that setting is accepted and
left alone; the kernel is chosen per model, `model.set_attention_backend(name)` (modeling/attention.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ModernBertConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from cmbert.modeling.attention import AttentionPlan, check_backend, document_ids
from cmbert.modeling.checkpoint import CheckpointMixin


@dataclass
class Unpadded:
    """A batch as one stream of real tokens. `indices` maps stream positions back into a padded [B*S] grid."""

    cu_seqlens: torch.Tensor  # int32 [n_docs + 1]
    max_seqlen: int
    indices: torch.Tensor | None = None  # None when the caller passed packed input
    batch_shape: tuple[int, int] | None = None

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor) -> Unpadded:
        mask = attention_mask.bool()
        # A row must hold one contiguous run of tokens (left or right padding): positions are counted within it.
        runs = mask[:, 0].long() + (mask[:, 1:] & ~mask[:, :-1]).sum(1)
        if bool((runs > 1).any()):
            raise ValueError("attention_mask rows must be one contiguous run of 1s (left or right padding only)")
        seqlens = mask.sum(1, dtype=torch.int32)
        cu_seqlens = F.pad(torch.cumsum(seqlens, 0, dtype=torch.int32), (1, 0))
        indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
        return cls(cu_seqlens, int(seqlens.max()) if len(seqlens) else 0, indices, tuple(mask.shape))

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S, ...] -> [total, ...] (packed input passes through)."""
        if self.indices is None:
            return x
        return x.reshape(-1, *x.shape[2:])[self.indices]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """[total, ...] -> [B, S, ...], zeros at padding (packed input passes through)."""
        if self.indices is None:
            return x
        out = x.new_zeros(self.batch_shape[0] * self.batch_shape[1], *x.shape[1:])
        return out.index_copy(0, self.indices, x).view(*self.batch_shape, *x.shape[1:])

    def positions(self, total: int) -> torch.Tensor:
        """Position of each token within its document (rotary restarts at every document)."""
        starts = self.cu_seqlens[:-1].long()
        return torch.arange(total, device=starts.device) - starts[document_ids(self.cu_seqlens, total)]


class ModernBertEmbeddings(nn.Module):
    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None):
        return self.drop(self.norm(self.tok_embeddings(input_ids) if inputs_embeds is None else inputs_embeds))


class Rotary(nn.Module):
    """cos/sin tables for one layer type ("full_attention" or "sliding_attention"), from `config.rope_parameters`.

    The inverse frequencies are recomputed in fp32 at every forward (head_dim / 2 numbers) rather than kept in a
    buffer: a buffer would come back uninitialised from transformers' meta-device loading and be rounded by
    `model.half()` / `model.to(bfloat16)`."""

    def __init__(self, config: ModernBertConfig, layer_type: str):
        super().__init__()
        self.config, self.layer_type = config, layer_type
        params = config.rope_parameters[layer_type]
        self.rope_type = params.get("rope_type", "default")
        self.theta = float(params["rope_theta"])
        self.head_dim = config.hidden_size // config.num_attention_heads
        if self.rope_type == "dynamic":
            raise NotImplementedError("dynamic RoPE scaling depends on the generated length; not used by encoders")
        if self.rope_type != "default" and self.rope_type not in ROPE_INIT_FUNCTIONS:
            raise ValueError(f"unknown rope_type {self.rope_type!r} for {layer_type}")

    def inv_freq(self, device: torch.device) -> tuple[torch.Tensor, float]:
        if self.rope_type == "default":
            # Same expression as transformers, so the fp32 tables match bit for bit.
            exponent = torch.arange(0, self.head_dim, 2, dtype=torch.float, device=device) / self.head_dim
            return 1.0 / (self.theta**exponent), 1.0
        inv_freq, scaling = ROPE_INIT_FUNCTIONS[self.rope_type](self.config, device, layer_type=self.layer_type)
        return inv_freq.float(), scaling

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq, scaling = self.inv_freq(positions.device)
        freqs = positions[:, None].float() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos() * scaling, emb.sin() * scaling  # [total, head_dim], fp32


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [total, heads, head_dim]. Rotated in fp32 (as transformers v5 does), returned in x's dtype."""
    xf = x.float()
    return (xf * cos[:, None] + rotate_half(xf) * sin[:, None]).to(x.dtype)


class ModernBertAttention(nn.Module):
    def __init__(self, config: ModernBertConfig, layer_idx: int):
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"hidden_size {config.hidden_size} is not a multiple of {config.num_attention_heads} heads")
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.local = config.layer_types[layer_idx] == "sliding_attention"
        self.dropout = config.attention_dropout
        self.deterministic = config.deterministic_flash_attn
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.Wo = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        self.out_drop = nn.Dropout(config.attention_dropout) if config.attention_dropout > 0 else nn.Identity()

    def forward(self, h: torch.Tensor, plan: AttentionPlan, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q, k, v = self.Wqkv(h).view(h.shape[0], 3, self.num_heads, self.head_dim).unbind(1)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        dropout = self.dropout if self.training else 0.0
        out = plan.attend(q, k, v, local=self.local, dropout_p=dropout, deterministic=self.deterministic)
        return self.out_drop(self.Wo(out.reshape(h.shape[0], -1)))


class ModernBertMLP(nn.Module):
    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.act = ACT2FN[config.hidden_activation]
        self.drop = nn.Dropout(config.mlp_dropout)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x, gate = self.Wi(h).chunk(2, dim=-1)
        return self.Wo(self.drop(self.act(x) * gate))


class ModernBertEncoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: ModernBertConfig, layer_idx: int):
        super().__init__()
        norm = lambda: nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.attn_norm = nn.Identity() if layer_idx == 0 else norm()
        self.attn = ModernBertAttention(config, layer_idx)
        self.mlp_norm = norm()
        self.mlp = ModernBertMLP(config)
        self.attention_type = config.layer_types[layer_idx]

    def forward(self, h: torch.Tensor, plan: AttentionPlan, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        h = h + self.attn(self.attn_norm(h), plan, rope)
        return h + self.mlp(self.mlp_norm(h))


class ModernBertPredictionHead(nn.Module):
    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.act = ACT2FN[config.classifier_activation]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(h)))


class ModernBertPreTrainedModel(CheckpointMixin, PreTrainedModel):
    config_class = ModernBertConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ModernBertEmbeddings", "ModernBertEncoderLayer"]

    @classmethod
    def is_custom_code(cls) -> bool:
        # transformers skips `_init_weights` on composite modules of "custom code", assuming such code writes weights
        # in place and would clobber loaded ones. Ours initialises through `transformers.initialization`, which
        # respects loaded-weight flags exactly as the library's own ModernBERT does, so it gets the same dispatch
        # (otherwise fresh weights, e.g. a new classifier, would stay uninitialised memory after from_pretrained).
        return False

    def _check_and_adjust_attn_implementation(self, attn_implementation, *args, **kwargs):
        # transformers' __init__ checks `config._attn_implementation` ("eager", "sdpa", "flash_attention_2",
        # "flex_attention", a hub kernel, or None for its default) against the `_supports_*` flags and writes back
        # what it resolved; with the flags False it rejects everything but "eager" and turns None into "eager" (on the
        # caller's config, so a transformers model built from it later would run eager). Our attention never goes through
        # transformers' attention functions, so any value is accepted and returned unchanged. That matters because
        # the config object is shared, not copied: `ModernBertForMaskedLM(theirs.config)` must leave the transformers
        # model that owns the config running its own kernel, and `from_pretrained(folder, attn_implementation=...)`
        # must load. The `_supports_*` flags stay False on purpose: to other tools they mean "dispatches through
        # ALL_ATTENTION_FUNCTIONS", and "flash_attention_2" would then need flash-attn at load time.
        return attn_implementation

    def set_attention_backend(self, name: str | None):
        """Run this model's attention with backend `name` ("auto", "flash", "varlen", "flex", "sdpa"; None: the
        process default, `CMBERT_ATTENTION`), whatever other models in the process use. Returns the model.

        The choice lives on this model object, not in its config: save_pretrained writes every config attribute into
        config.json (a release checkpoint must not carry one machine's kernel: "flash" fails on a CPU), and a config
        may be shared (with a transformers model, between a head and its encoder, via `from_pretrained(config=...)`),
        so a config key would reach models it was never set on. deepcopy, `.to()` and DeepSpeed's wrapper keep it;
        `from_pretrained` starts at None. Read it back as `model.base_model.attention_backend`."""
        if name is not None:
            check_backend(name)
        for module in self.modules():  # the encoder, which builds the attention plan: self, or a head's `model`
            if isinstance(module, ModernBertModel):
                module.attention_backend = name
        return self

    def _init_weights(self, module: nn.Module):
        """transformers' ModernBERT init: truncated normal (+-cutoff std), std 0.02 for inputs and embeddings,
        0.02 / sqrt(2 * layers) for every output projection, hidden**-0.5 for classifiers; norms at 1."""
        super()._init_weights(module)  # LayerNorm weights to 1, as transformers' ModernBERT also starts with
        cfg = self.config
        cutoff = cfg.initializer_cutoff_factor or 3.0
        std_in = cfg.initializer_range
        std_out = cfg.initializer_range / math.sqrt(2.0 * cfg.num_hidden_layers)

        def init_layer(layer: nn.Module, std: float):
            init.trunc_normal_(layer.weight, mean=0.0, std=std, a=-cutoff * std, b=cutoff * std)
            if getattr(layer, "bias", None) is not None:
                init.zeros_(layer.bias)

        if isinstance(module, ModernBertEmbeddings):
            init_layer(module.tok_embeddings, std_in)
        elif isinstance(module, ModernBertAttention):
            init_layer(module.Wqkv, std_in)
            init_layer(module.Wo, std_out)
        elif isinstance(module, ModernBertMLP):
            init_layer(module.Wi, std_in)
            init_layer(module.Wo, std_out)
        elif isinstance(module, ModernBertPredictionHead):
            init_layer(module.dense, std_out)
        elif isinstance(module, ModernBertForMaskedLM):
            init_layer(module.decoder, std_out)
        elif isinstance(module, ModernBertClassifier):
            init_layer(module.classifier, cfg.hidden_size**-0.5)


def enable_checkpointing(model: nn.Module) -> None:
    """Recompute each encoder layer in backward: less activation memory (8k-token documents), ~1/3 more compute."""
    # transformers 5 renamed gradient_checkpointing_enable (kept as a deprecated alias that warns)
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()


class ModernBertModel(ModernBertPreTrainedModel):
    def __init__(self, config: ModernBertConfig):
        super().__init__(config)
        self.embeddings = ModernBertEmbeddings(config)
        self.layers = nn.ModuleList(ModernBertEncoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.rotary = nn.ModuleDict({t: Rotary(config, t) for t in sorted(set(config.layer_types))})
        self.attention_backend: str | None = None  # set_attention_backend; None: the process default
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.tok_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.tok_embeddings = value

    def encode(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, Unpadded, list[torch.Tensor] | None]:
        """Run the encoder on real tokens only. Returns the final states [total, hidden], the batch layout, and
        (optionally) the input of every layer plus the final states, all unpadded."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        tokens = input_ids if input_ids is not None else inputs_embeds
        packed = tokens.dim() == (1 if input_ids is not None else 2)
        if packed:
            if cu_seqlens is None:
                raise ValueError("packed (1-D) input needs cu_seqlens")
            if attention_mask is not None:
                raise ValueError("packed input takes cu_seqlens, not attention_mask")
            cu_seqlens = cu_seqlens.to(device=tokens.device, dtype=torch.int32)
            if cu_seqlens.dim() != 1 or int(cu_seqlens[0]) != 0 or int(cu_seqlens[-1]) != tokens.shape[0]:
                raise ValueError(f"cu_seqlens must run from 0 to the {tokens.shape[0]} packed tokens")
            if max_seqlen is None:
                max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
            batch = Unpadded(cu_seqlens, int(max_seqlen))
        else:
            if cu_seqlens is not None:
                raise ValueError("cu_seqlens goes with packed 1-D input_ids, not a padded batch")
            if attention_mask is None:
                attention_mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
            batch = Unpadded.from_mask(attention_mask)
        tokens = batch.unpad(tokens)
        total = tokens.shape[0]

        h = self.embeddings(input_ids=tokens) if input_ids is not None else self.embeddings(inputs_embeds=tokens)
        plan = AttentionPlan.build(batch.cu_seqlens, batch.max_seqlen, total, self.config.local_attention // 2, h.device,
                                   self.attention_backend)
        positions = batch.positions(total)
        ropes = {layer_type: rotary(positions) for layer_type, rotary in self.rotary.items()}
        states = [] if output_hidden_states else None
        for layer in self.layers:
            if states is not None:
                states.append(h)
            h = layer(h, plan=plan, rope=ropes[layer.attention_type])
        h = self.final_norm(h)
        if states is not None:
            states.append(h)
        return h, batch, states

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutput:
        """Padded `input_ids` [B, S] + `attention_mask` -> `last_hidden_state` [B, S, hidden] (zeros at padding);
        packed `input_ids` [total] + `cu_seqlens` (+ `max_seqlen`) -> [total, hidden]."""
        _reject_unsupported(kwargs)
        h, batch, states = self.encode(input_ids, attention_mask, inputs_embeds, cu_seqlens, max_seqlen,
                                       bool(output_hidden_states))
        return BaseModelOutput(
            last_hidden_state=batch.pad(h),
            hidden_states=tuple(batch.pad(s) for s in states) if states is not None else None,
        )


class ModernBertForMaskedLM(ModernBertPreTrainedModel):
    _tied_weights_keys = {"decoder.weight": "model.embeddings.tok_embeddings.weight"}

    def __init__(self, config: ModernBertConfig):
        super().__init__(config)
        self.model = ModernBertModel(config)
        self.head = ModernBertPredictionHead(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
        self.post_init()

    def get_output_embeddings(self):
        return self.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear):
        self.decoder = new_embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        output_hidden_states: bool | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        return_logits: bool = True,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        """Without labels: logits for every token ([B, S, vocab] padded, [total, vocab] packed).

        With labels (-100 = unlabelled, same layout as input_ids): the head runs only on labelled tokens, `logits` is
        [n_labelled, vocab] in stream order (as transformers' `sparse_prediction=True`), and `loss` is the summed CE
        divided by the number of labelled tokens, or by `num_items_in_batch` when the caller accumulates gradients
        over micro-batches (so accumulation never inflates the loss).

        The loss goes through `linear_cross_entropy`, which never keeps [n_labelled, vocab] activations for backward;
        the returned logits are therefore a detached by-product (for metrics); `return_logits=False` skips them.
        For a differentiable logit (distillation, say), apply `self.decoder(self.head(h))` to hidden states."""
        _reject_unsupported(kwargs)
        h, batch, states = self.model.encode(input_ids, attention_mask, inputs_embeds, cu_seqlens, max_seqlen,
                                             bool(output_hidden_states))
        hidden_states = tuple(batch.pad(s) for s in states) if states is not None else None
        if labels is None:
            logits = self.decoder(self.head(h))
            return MaskedLMOutput(logits=batch.pad(logits), hidden_states=hidden_states)

        labels = batch.unpad(labels.to(h.device))
        selected = labels != self.config.sparse_pred_ignore_index
        labels = labels[selected]
        loss, logits = linear_cross_entropy(self.head(h[selected]), self.decoder.weight, self.decoder.bias, labels,
                                            return_logits=return_logits)
        denominator = num_items_in_batch if num_items_in_batch is not None else max(labels.numel(), 1)
        if torch.is_tensor(denominator):
            denominator = denominator.to(loss.device)
        return MaskedLMOutput(loss=loss / denominator, logits=logits, hidden_states=hidden_states)


class ModernBertClassifier(ModernBertPreTrainedModel):
    """What transformers' sequence and token classifiers share: the encoder, then prediction head -> dropout -> a
    linear layer, under the same module names (`head`, `drop`, `classifier`)."""

    _fresh_head_keys = re.compile(r"^(head\.|classifier\.)")  # fine-tuning starts from an MLM or base checkpoint

    def __init__(self, config: ModernBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = ModernBertModel(config)
        self.head = ModernBertPredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()


class ModernBertForSequenceClassification(ModernBertClassifier):
    def __init__(self, config: ModernBertConfig):
        if config.classifier_pooling not in ("cls", "mean"):
            raise ValueError(f"classifier_pooling must be 'cls' or 'mean', not {config.classifier_pooling!r}")
        super().__init__(config)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        """One prediction per document: `logits` [n_docs, num_labels] (a padded batch has one document per row).
        Pooling is the first token ("cls") or the mean over the document's tokens ("mean"); losses follow
        transformers' `problem_type` rules (regression / single_label / multi_label_classification)."""
        _reject_unsupported(kwargs)
        h, batch, states = self.model.encode(input_ids, attention_mask, inputs_embeds, cu_seqlens, max_seqlen,
                                             bool(output_hidden_states))
        if self.config.classifier_pooling == "cls":
            pooled = h[batch.cu_seqlens[:-1].long().clamp(max=max(h.shape[0] - 1, 0))]
        else:
            n_docs = batch.cu_seqlens.numel() - 1
            lengths = (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1]).clamp(min=1).to(h.dtype)
            doc = document_ids(batch.cu_seqlens, h.shape[0])
            pooled = h.new_zeros(n_docs, h.shape[1]).index_add(0, doc, h) / lengths[:, None]
        logits = self.classifier(self.drop(self.head(pooled)))
        loss = None if labels is None else self.classification_loss(logits, labels.to(logits.device))
        hidden_states = tuple(batch.pad(s) for s in states) if states is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.problem_type is None:  # transformers' rule for inferring the task from the labels
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            if self.num_labels == 1:
                return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
            return F.mse_loss(logits, labels.to(logits.dtype))
        if self.config.problem_type == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        if self.config.problem_type == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        raise ValueError(f"unknown problem_type {self.config.problem_type!r}")


class ModernBertForTokenClassification(ModernBertClassifier):
    """transformers' token classifier (NER and other tagging): prediction head, dropout and a linear layer on every
    token, with the same module names, so `AutoModelForTokenClassification` loads what this class saves."""

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        """One prediction per token: `logits` [B, S, num_labels] for a padded batch (zeros at padding), [total,
        num_labels] for packed input. `labels` has the input's layout with -100 where unlabelled (special tokens,
        continuation subwords); `loss` is the mean cross-entropy over labelled tokens, as transformers computes it.
        Padding positions never enter the loss, whatever `labels` holds there (transformers would count a label a
        caller left on padding; collators put -100 there anyway)."""
        _reject_unsupported(kwargs)
        h, batch, states = self.model.encode(input_ids, attention_mask, inputs_embeds, cu_seqlens, max_seqlen,
                                             bool(output_hidden_states))
        logits = self.classifier(self.drop(self.head(h)))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits, batch.unpad(labels.to(logits.device)), ignore_index=-100)
        hidden_states = tuple(batch.pad(s) for s in states) if states is not None else None
        return TokenClassifierOutput(loss=loss, logits=batch.pad(logits), hidden_states=hidden_states)


class ModernBertForQuestionAnswering(ModernBertClassifier):
    """transformers' extractive QA model: the token classifier's head with `num_labels` 2 (transformers' default),
    read as a start and an end logit per token, under the same module names, so `AutoModelForQuestionAnswering` and
    `pipeline("question-answering")` load what this class saves."""

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> QuestionAnsweringModelOutput:
        """`start_logits`, `end_logits`: [B, S] for a padded batch (zeros at padding), [total] for packed input.

        `start_positions` / `end_positions` [n_docs] index tokens within each row (padded: the row's column, as in
        transformers; packed: the token's place in its document). `loss` is the mean of the start and end
        cross-entropies, as transformers computes it, with one difference: padding never enters the softmax
        (transformers scores its padding positions like tokens, which changes its loss on padded batches only),
        and a position outside the row's real tokens is ignored (transformers ignores positions >= S only)."""
        _reject_unsupported(kwargs)
        h, batch, states = self.model.encode(input_ids, attention_mask, inputs_embeds, cu_seqlens, max_seqlen,
                                             bool(output_hidden_states))
        logits = self.classifier(self.drop(self.head(h)))  # [total, 2]
        loss = None
        if start_positions is not None and end_positions is not None:
            # One row per document with -inf outside its real tokens, so both softmaxes run over real tokens only.
            if batch.indices is not None:
                real = batch.pad(torch.ones_like(logits[:, 0], dtype=torch.bool))
                grid = batch.pad(logits).masked_fill(~real[..., None], float("-inf"))
            else:
                n_docs, total = batch.cu_seqlens.numel() - 1, logits.shape[0]
                grid = logits.new_full((n_docs, batch.max_seqlen, 2), float("-inf"))
                grid[document_ids(batch.cu_seqlens, total), batch.positions(total)] = logits
                real = grid[..., 0] > float("-inf")
            width = grid.shape[1]

            def targets(positions: torch.Tensor) -> torch.Tensor:
                positions = positions.to(grid.device).view(-1).clamp(0, width)  # width = ignored, as transformers
                inside = real[torch.arange(len(positions), device=grid.device), positions.clamp(max=width - 1)]
                return positions.masked_fill(~inside, width)

            start_loss = F.cross_entropy(grid[..., 0].float(), targets(start_positions), ignore_index=width)
            end_loss = F.cross_entropy(grid[..., 1].float(), targets(end_positions), ignore_index=width)
            loss = (start_loss + end_loss) / 2
        logits = batch.pad(logits)
        hidden_states = tuple(batch.pad(s) for s in states) if states is not None else None
        return QuestionAnsweringModelOutput(loss=loss, start_logits=logits[..., 0].contiguous(),
                                            end_logits=logits[..., 1].contiguous(), hidden_states=hidden_states)


class LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `x @ weight.T + bias` against `labels`, computed in row chunks, with the gradients
    computed in the same pass. The [n, vocab] logits and log-probabilities are never kept for backward: each chunk's softmax becomes its gradient in place and is folded into grad_x / grad_weight at once.
    The same FLOPs as decoder + F.cross_entropy, minus the log-softmax tensors and their zero-filled gradients."""

    @staticmethod
    def forward(ctx, x, weight, bias, labels, chunk: int, return_logits: bool, grad_enabled: bool):
        # Grad mode is always off inside forward, so the caller says whether a backward can follow.
        want_x, want_w, want_b = (need and grad_enabled for need in ctx.needs_input_grad[:3])
        n = x.shape[0]
        loss = torch.zeros((), dtype=torch.float32, device=x.device)
        logits_out = x.new_empty(n, weight.shape[0]) if return_logits else None
        grad_x = torch.empty_like(x) if want_x else None
        grad_w = grad_b = None
        # Two chunk buffers reused by every chunk: fresh [chunk, vocab] tensors would page-fault on every chunk
        # (on CPU that is a quarter of the decoder's time: writing 160 MB into new pages runs at ~4 GB/s).
        rows = min(chunk, n)
        logits_buf = x.new_empty(rows, weight.shape[0])
        log_probs_buf = torch.empty(rows, weight.shape[0], dtype=torch.float32, device=x.device)
        for start in range(0, n, chunk):
            xc, yc = x[start : start + chunk], labels[start : start + chunk]
            logits = logits_buf[: len(xc)]
            if bias is not None:
                torch.addmm(bias, xc, weight.t(), out=logits)
            else:
                torch.mm(xc, weight.t(), out=logits)
            if logits_out is not None:
                logits_out[start : start + chunk] = logits
            log_probs = torch.log_softmax(logits.float(), dim=-1, out=log_probs_buf[: len(xc)])
            loss -= log_probs.gather(1, yc[:, None]).sum()
            if want_x or want_w or want_b:
                probs = log_probs.exp_()  # d(loss)/d(logits) = softmax - onehot
                probs[torch.arange(len(yc), device=probs.device), yc] -= 1.0
                g = probs.to(x.dtype)
                if want_x:
                    torch.mm(g, weight, out=grad_x[start : start + chunk])
                if want_w:  # the first chunk writes, later ones accumulate (no zero-filled [vocab, hidden] pass)
                    grad_w = g.t() @ xc if grad_w is None else grad_w.addmm_(g.t(), xc)
                if want_b:
                    grad_b = g.sum(0) if grad_b is None else grad_b.add_(g.sum(0))
        if want_w and grad_w is None:  # no labelled token in the batch
            grad_w = torch.zeros_like(weight)
        if want_b and grad_b is None:
            grad_b = torch.zeros_like(bias)
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        if logits_out is not None:
            ctx.mark_non_differentiable(logits_out)
        # The logits output never receives a gradient; without this autograd would build a zero [n, vocab] tensor.
        ctx.set_materialize_grads(False)
        return loss, logits_out

    @staticmethod
    def backward(ctx, grad_loss, grad_logits):
        grad_x, grad_w, grad_b = ctx.saved_tensors
        scale = lambda g: None if g is None else g * grad_loss.to(g.dtype)
        return scale(grad_x), scale(grad_w), scale(grad_b), None, None, None, None


def linear_cross_entropy(x, weight, bias, labels, return_logits: bool = True, chunk_elements: int = 1 << 23):
    """(summed CE loss, detached logits or None) for the MLM decoder; see `LinearCrossEntropy`.
    Chunks hold ~8M logits (32 MiB fp32): smaller chunks re-read grad_weight ([vocab, hidden]) too often, larger
    ones add memory and no speed (790 x 50,368 fwd + bwd on 2 threads: 0.41 s at 8M or 16M per chunk, 0.43-0.44 s
    at 32-64M; unfused F.linear + F.cross_entropy 0.50 s; see BENCHMARKS.md)."""
    chunk = max(1, chunk_elements // weight.shape[0])
    return LinearCrossEntropy.apply(x, weight, bias, labels, chunk, return_logits, torch.is_grad_enabled())


def _reject_unsupported(kwargs: dict) -> None:
    """Fail loudly on transformers kwargs this implementation does not honour, instead of ignoring them."""
    if kwargs.get("output_attentions"):
        raise NotImplementedError("output_attentions: use transformers' eager ModernBERT to inspect attention maps")
    if kwargs.get("position_ids") is not None:
        raise NotImplementedError("position_ids: positions are derived from attention_mask / cu_seqlens")
    unknown = set(kwargs) - {"output_attentions", "position_ids", "token_type_ids"}
    if unknown:
        raise TypeError(f"unexpected arguments: {sorted(unknown)}")
