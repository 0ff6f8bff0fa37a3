"""Attention kernels for unpadded (varlen) tokens; each model chooses its backend.

The encoder never pads: a batch is a flat stream of `total` tokens whose documents are delimited by `cu_seqlens`
(int32, [n_docs + 1]). Every backend computes the same thing: bidirectional softmax attention inside each document,
and on local layers only between tokens at most `window` positions apart (`window = local_attention // 2`, so the
default 128-token window is +-64; transformers' `sliding_window_bidirectional_overlay` is `|i - j| <= window`).

Backends (each model picks its own, see "Which backend a forward uses" below):
- ``flash``  flash-attn varlen (CUDA, package `flash-attn`); fp32 inputs are run in bf16, as transformers v4 did.
- ``varlen`` torch's own flash varlen kernel, `torch.nn.attention.varlen.varlen_attn` (CUDA, torch >= 2.10).
- ``flex``   FlexAttention with a document (+ window) block mask (CUDA for training; on CPU forward only).
- ``sdpa``   the CPU fallback, chosen by measurement (BENCHMARKS.md): global layers run SDPA per group of
             documents of similar length (no S x S padding waste, no mask for equal lengths); local layers run
             SDPA over 3-block bands of the token stream (block = window), so memory grows linearly with length
             and nothing S x S is ever built.
- ``auto``   flash if installed on CUDA, else varlen, else flex on CUDA; sdpa on CPU.

Which backend a forward uses, first match wins:
1. inside a `with attention_backend(name):` block, `name`, for every model (tests force a kernel this way);
2. the model's own choice, `model.set_attention_backend(name)` (what the recipes do with `model.attention_backend`);
3. the process default: the `CMBERT_ATTENTION` env var, else "auto" (`set_attention_backend(name)` changes it, for
   scripts that own their process, such as bench/).
The choice is per model so that two models in one process (a recipe run after another in the same interpreter, a
teacher beside a student) never inherit each other's kernel.

A `AttentionPlan` is built once per forward (document ids, bucket indices, block masks) and shared by all layers.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "flash", "varlen", "flex", "sdpa")
ENV_VAR = "CMBERT_ATTENTION"
_default = os.environ.get(ENV_VAR, "auto")  # checked when a forward resolves it (importing never fails on a typo)
_override: str | None = None  # set only inside `attention_backend(...)` blocks


def check_backend(name: str) -> str:
    """`name` if it is a backend, else ValueError listing them."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {BACKENDS}")
    return name


def set_attention_backend(name: str) -> None:
    """Change the process default: the backend of every model that has not chosen one itself. For scripts that own
    their process (bench/); a recipe sets the backend on the model it builds instead (`model.set_attention_backend`),
    so it leaves nothing behind for the next model in the process."""
    global _default
    _default = check_backend(name)


def default_attention_backend() -> str:
    """The process default (`CMBERT_ATTENTION`, else "auto", unless `set_attention_backend` changed it)."""
    return _default


@contextlib.contextmanager
def attention_backend(name: str):
    """Every forward inside the block uses backend `name`, whatever its model chose; restored on exit (tests)."""
    global _override
    previous, _override = _override, check_backend(name)
    try:
        yield
    finally:
        _override = previous


@functools.cache
def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


@functools.cache
def torch_varlen_available() -> bool:
    """torch's varlen flash kernel with a sliding window (the `window_size` argument arrived after the function)."""
    if importlib.util.find_spec("torch.nn.attention.varlen") is None:
        return False
    from torch.nn.attention.varlen import varlen_attn

    return "window_size" in inspect.signature(varlen_attn).parameters


def resolve_backend(device: torch.device, requested: str | None = None) -> str:
    """The kernel a forward on `device` runs for a model that asked for `requested` (None: nothing, so the process
    default), under the precedence of the module docstring."""
    name = check_backend(_override or requested or _default)
    if name == "auto":
        if device.type == "cuda":
            if flash_attn_available():
                return "flash"
            return "varlen" if torch_varlen_available() else "flex"
        return "sdpa"
    if name in ("flash", "varlen") and device.type != "cuda":
        raise RuntimeError(f"attention backend {name!r} needs a CUDA device; use 'sdpa' on CPU")
    if name == "flash" and not flash_attn_available():
        raise RuntimeError("attention backend 'flash' needs flash-attn: pip install -e '.[gpu]' --no-build-isolation")
    if name == "varlen" and not torch_varlen_available():
        raise RuntimeError(f"attention backend 'varlen' needs torch.nn.attention.varlen with window_size "
                           f"(torch {torch.__version__} lacks it); use 'flex' or 'flash'")
    return name


def document_ids(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """The document index of every token of the stream: [total] int64."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    return torch.repeat_interleave(torch.arange(len(lengths), device=cu_seqlens.device), lengths, output_size=total)


def _group_documents(lengths: list[int], max_padding: float) -> list[list[int]]:
    """Group document indices so that each group pads to its longest member with at most `max_padding`
    of its attention work wasted (a document of length L in a group of longest M costs M^2 instead of L^2)."""
    order = sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] ** 2 >= (1.0 - max_padding) * lengths[groups[-1][0]] ** 2:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@dataclass
class AttentionPlan:
    """Everything about a batch's document layout that attention needs, computed once per forward."""

    cu_seqlens: torch.Tensor  # int32 [n_docs + 1]
    max_seqlen: int
    total: int
    window: int  # one-sided window of local layers: |i - j| <= window
    backend: str
    # sdpa backend: per group of documents, a slice of the stream (one document) or a [n, L] index into it (pads
    # point at `total`) with its key mask; and the permutation that puts the groups' outputs back in stream order.
    groups: list[tuple[slice | torch.Tensor, torch.Tensor | None]] = field(default_factory=list)
    unpermute: torch.Tensor | None = None
    band_mask: torch.Tensor | None = None  # [n_blocks, 1, block, 3 * block] bool
    flex_masks: dict = field(default_factory=dict)

    @property
    def block(self) -> int:
        # Local attention runs on blocks of `window` tokens: a block and its two neighbours hold every key
        # that any of its queries may see.
        return max(self.window, 1)

    @classmethod
    def build(cls, cu_seqlens: torch.Tensor, max_seqlen: int, total: int, window: int, device: torch.device,
              requested: str | None = None):
        """The plan of one forward; `requested` is the model's own backend choice (None: the process default)."""
        backend = resolve_backend(device, requested)
        plan = cls(cu_seqlens.to(device=device, dtype=torch.int32), int(max_seqlen), total, window, backend)
        if backend == "sdpa":
            plan._build_sdpa(device)
        elif backend == "flex":
            plan._build_flex(device)
        return plan

    # --- sdpa (CPU) -----------------------------------------------------------------------------------------
    def _build_sdpa(self, device):
        starts = self.cu_seqlens[:-1].tolist()
        lengths = (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).tolist()
        # 10 % tolerated attention waste: lengths within ~5 % share one SDPA call. A document alone in its group
        # is a contiguous slice of the stream (no gather, no mask); groups run in stream order where possible.
        order = []
        for group in sorted(_group_documents(lengths, max_padding=0.1), key=lambda g: starts[g[0]]):
            if len(group) == 1:
                start = starts[group[0]]
                self.groups.append((slice(start, start + lengths[group[0]]), None))
                order.append(torch.arange(start, start + lengths[group[0]], device=device))
                continue
            longest = lengths[group[0]]
            pos = torch.arange(longest, device=device)
            start = torch.tensor([starts[i] for i in group], device=device)
            length = torch.tensor([lengths[i] for i in group], device=device)
            valid = pos[None, :] < length[:, None]
            index = torch.where(valid, start[:, None] + pos[None, :], self.total)
            self.groups.append((index, None if bool(valid.all()) else valid[:, None, None, :]))
            order.append(index[valid])
        order = torch.cat(order) if order else torch.zeros(0, dtype=torch.long, device=device)
        if not torch.equal(order, torch.arange(self.total, device=device)):
            self.unpermute = torch.argsort(order)
        if self.window < self.max_seqlen - 1:  # otherwise every local layer sees whole documents
            self.band_mask = self._band_mask(device)

    def _band_mask(self, device) -> torch.Tensor:
        block = self.block
        n_blocks = -(-self.total // block)
        # Padded stream: one empty block on each side, and the tail of the last block. Padding slots get document
        # id -1, so real queries never see them and padding queries (discarded) see only padding, never nothing.
        doc = torch.full(((n_blocks + 2) * block,), -1, device=device, dtype=torch.long)
        doc[block : block + self.total] = document_ids(self.cu_seqlens, self.total)
        pos = torch.arange((n_blocks + 2) * block, device=device)
        q_doc = doc[block : (n_blocks + 1) * block].view(n_blocks, block, 1)
        q_pos = pos[block : (n_blocks + 1) * block].view(n_blocks, block, 1)
        k_doc = _three_blocks(doc.view(n_blocks + 2, block)).view(n_blocks, 1, 3 * block)
        k_pos = _three_blocks(pos.view(n_blocks + 2, block)).view(n_blocks, 1, 3 * block)
        return ((q_doc == k_doc) & ((q_pos - k_pos).abs() <= self.window)).unsqueeze(1)

    def _sdpa_global(self, q, k, v, dropout_p):
        if any(isinstance(index, torch.Tensor) for index, _ in self.groups):
            # One zero row at index `total` stands in for padding slots of multi-document groups.
            padded = [torch.cat([x, x.new_zeros(1, *x.shape[1:])]) for x in (q, k, v)]
        outs = []
        for index, key_mask in self.groups:
            if isinstance(index, slice):  # one document: [L, H, D] -> [1, H, L, D], a view
                qg, kg, vg = (x[index].unsqueeze(0).transpose(1, 2) for x in (q, k, v))
            else:
                qg, kg, vg = (x[index].transpose(1, 2) for x in padded)  # [n, L, H, D] -> [n, H, L, D]
            o = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=key_mask, dropout_p=dropout_p).transpose(1, 2)
            outs.append(o[index < self.total] if key_mask is not None else o.reshape(-1, *o.shape[2:]))
        out = torch.cat(outs)
        return out if self.unpermute is None else out[self.unpermute]

    def _sdpa_local(self, q, k, v, dropout_p):
        block = self.block
        n_blocks = self.band_mask.shape[0]
        pad = n_blocks * block - self.total

        def blocks(x, extra):  # [total, H, D] -> [n_blocks + 2*extra, block, H, D]
            x = F.pad(x, (0, 0, 0, 0, extra * block, pad + extra * block))
            return x.view(-1, block, *x.shape[1:])

        qb = blocks(q, 0).transpose(1, 2)  # [n_blocks, H, block, D]
        kb = _three_blocks(blocks(k, 1)).transpose(1, 2)  # [n_blocks, H, 3*block, D]
        vb = _three_blocks(blocks(v, 1)).transpose(1, 2)
        o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=self.band_mask, dropout_p=dropout_p)
        return o.transpose(1, 2).reshape(n_blocks * block, *q.shape[1:])[: self.total]

    # --- flex (CUDA; CPU forward only) ------------------------------------------------------------------------
    def _build_flex(self, device):
        from torch.nn.attention.flex_attention import create_block_mask

        doc = document_ids(self.cu_seqlens, self.total)
        window = self.window

        def document(b, h, q_idx, kv_idx):
            return doc[q_idx] == doc[kv_idx]

        def document_window(b, h, q_idx, kv_idx):
            return (doc[q_idx] == doc[kv_idx]) & ((q_idx - kv_idx).abs() <= window)

        self.flex_masks = {
            local: create_block_mask(fn, None, None, self.total, self.total, device=device)
            for local, fn in ((False, document), (True, document_window))
        }

    # --- dispatch -------------------------------------------------------------------------------------------
    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, local: bool, dropout_p: float = 0.0,
               deterministic: bool = False) -> torch.Tensor:
        """q, k, v: [total, heads, head_dim] -> [total, heads, head_dim]."""
        local = local and self.window < self.max_seqlen - 1
        if self.backend == "sdpa":
            if q.device.type == "cpu" and q.dtype == torch.bfloat16:
                # CPU SDPA's bf16 kernels run slower than its fp32 ones (backward ~2x under torch.profiler), so
                # under bf16 autocast the GEMMs around it gain and the attention itself is computed in fp32.
                with torch.autocast("cpu", enabled=False):
                    return self.attend(q.float(), k.float(), v.float(), local, dropout_p).to(q.dtype)
            if local:
                return self._sdpa_local(q, k, v, dropout_p)
            return self._sdpa_global(q, k, v, dropout_p)
        window = (self.window, self.window) if local else (-1, -1)
        if self.backend == "flash":
            from flash_attn import flash_attn_varlen_func

            dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
            out = flash_attn_varlen_func(
                q.to(dtype), k.to(dtype), v.to(dtype), self.cu_seqlens, self.cu_seqlens, self.max_seqlen,
                self.max_seqlen, dropout_p=dropout_p, causal=False, window_size=window, deterministic=deterministic,
            )
            return out.to(q.dtype)
        if self.backend == "varlen":
            if dropout_p > 0:
                raise NotImplementedError("torch varlen_attn has no dropout; use attention_dropout=0 or 'flash'")
            from torch.nn.attention.varlen import varlen_attn

            dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
            out = varlen_attn(q.to(dtype), k.to(dtype), v.to(dtype), self.cu_seqlens, self.cu_seqlens,
                              self.max_seqlen, self.max_seqlen, window_size=window)
            return out.to(q.dtype)
        if self.backend == "flex":
            if dropout_p > 0:
                raise NotImplementedError("FlexAttention has no dropout; use attention_dropout=0 or 'flash'")
            from torch.nn.attention.flex_attention import flex_attention

            fn = flex_attention if q.device.type == "cpu" else _compiled_flex()
            out = fn(*(x.transpose(0, 1).unsqueeze(0) for x in (q, k, v)), block_mask=self.flex_masks[local])
            return out.squeeze(0).transpose(0, 1)
        raise ValueError(f"unknown attention backend {self.backend!r}")


def _three_blocks(x: torch.Tensor) -> torch.Tensor:
    """[n + 2, block, ...] -> [n, 3 * block, ...]: each block with its left and right neighbour."""
    return torch.cat([x[:-2], x[1:-1], x[2:]], dim=1)


_compiled = None


def _compiled_flex():
    global _compiled
    if _compiled is None:
        from torch.nn.attention.flex_attention import flex_attention

        # Default dynamic-shape handling: the stream length changes every batch, so a static compile would
        # recompile every step.
        _compiled = torch.compile(flex_attention)
    return _compiled
