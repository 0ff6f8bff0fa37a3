"""Reading packed token shards (written by `cmbert.pretrain.packing.pack_corpus`) for pretraining.

`PackedDataset` maps a global sample index g (counted over all ranks since the start of training) to a row, as a
pure function of (manifest, seed, weights, g). So resuming is `iter_from(samples_seen)` with the index stored in the
checkpoint, and data-parallel rank r of `world_size` reads samples r, r + world_size, ...: disjoint, together all.

An epoch is as many samples as the corpus has rows. Weights are shares of training tokens: source s gets the
number of rows that carries weight_s of the epoch's tokens (largest-remainder rounding), so with the default
token-proportional weights every row is read exactly once per epoch. Within epoch e the
positions are shuffled by a keyed permutation; the k-th sample drawn from source s (counted across epochs) is row
perm_s,c(k mod n_s) of its n_s rows, with a fresh permutation for each cycle c = k // n_s through the source, so an
up-weighted source repeats its rows in new orders and a down-weighted one continues where the last epoch stopped.

The permutations are Feistel networks over the index bits (cycle-walking down to n), keyed from the seed with
numpy's SeedSequence: any position is computed in O(1) time and memory, with no permutation array held for a corpus
of millions of rows (ModernBERT replaced torch's RandomSampler over 1B+ samples for the same reason). Rows are read
through memory maps only, and few shards are kept open at a time, so RAM stays constant.
"""

from __future__ import annotations

import json
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from cmbert.core.io import ReadError
from cmbert.pretrain.packing import FORMAT, FORMAT_VERSION, mixture_weights

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a strong bijective scramble of uint64 (wraps on overflow, as intended)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


class Permutation:
    """A keyed pseudo-random permutation of range(n), evaluated pointwise on arrays of indices."""

    ROUNDS = 6

    def __init__(self, n: int, key: Sequence[int]):
        if n < 1:
            raise ValueError("cannot permute an empty range")
        self.n = n
        bits = max(2, (n - 1).bit_length())
        self.half = np.uint64((bits + 1) // 2)  # domain 4^half < 4n: cycle-walking takes < 4 rounds on average
        self.mask = np.uint64((1 << int(self.half)) - 1)
        self.round_keys = np.random.SeedSequence(list(key)).generate_state(self.ROUNDS, np.uint64)

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self.half, x & self.mask
        for key in self.round_keys:
            left, right = right, left ^ (_mix64(right ^ key) & self.mask)
        return (left << self.half) | right

    def __call__(self, index: np.ndarray) -> np.ndarray:
        out = self._feistel(np.asarray(index, dtype=np.uint64))
        outside = out >= self.n
        while outside.any():  # walk the cycle until it comes back into range(n); it must, x itself is in range
            out[outside] = self._feistel(out[outside])
            outside = out >= self.n
        return out.astype(np.int64)


class PackedDataset:
    """Rows of a packed corpus, mixed by source weights, in a seeded order that any sample index can resume.

    `path`: the pack output folder (or its manifest.json). `seed`: None takes the manifest's. `weights`: None takes
    the manifest's, or per-source overrides as in `cmbert.pretrain.packing.mixture_weights`. Each sample is a dict with
    `input_ids` (int64 [n]), `cu_seqlens` (int32 [documents + 1], from 0 to n) and `source`.
    """

    def __init__(self, path: str | Path, seed: int | None = None, rank: int = 0, world_size: int = 1,
                 weights: dict[str, float] | None = None, max_open_shards: int = 64):
        path = Path(path)
        self.folder = path.parent if path.suffix == ".json" else path
        manifest_path = self.folder / "manifest.json"
        if not manifest_path.is_file():
            raise ReadError(f"{self.folder}: no manifest.json (pack with `cmbert corpus pack`, or merge partial ones)")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise ReadError(f"{manifest_path}: not a {FORMAT} v{FORMAT_VERSION} manifest")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.manifest, self.rank, self.world_size = manifest, rank, world_size
        self.seed = manifest["seed"] if seed is None else seed
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        self.max_seq_len = manifest["max_seq_len"]
        sources = manifest["sources"]
        self.weights = (mixture_weights({n: s["tokens"] for n, s in sources.items()}, weights) if weights is not None
                        else {n: s["weight"] for n, s in sources.items()})

        # Only sources that are sampled; each with its rows, shard list and cumulative shard starts.
        self.sources = [n for n in sorted(sources) if self.weights[n] > 0 and sources[n]["rows"] > 0]
        if not self.sources:
            raise ReadError(f"{manifest_path}: no rows to sample (empty corpus or all weights 0)")
        self.source_rows = np.array([sources[n]["rows"] for n in self.sources], np.int64)
        self.shards = [[s["name"] for s in sources[n]["shards"]] for n in self.sources]
        self.shard_starts = [np.cumsum([0] + [s["rows"] for s in sources[n]["shards"]]) for n in self.sources]
        self.source_keys = [zlib.crc32(n.encode()) for n in self.sources]

        # Samples per source in one epoch. Weights are shares of tokens; a source's rows hold tokens/rows each, so
        # its share of rows is weight / (tokens per row), normalised, rounded by largest remainder. The default
        # (token-proportional) weights thus give each source exactly its row count: every row once per epoch.
        self.epoch_size = int(sum(sources[n]["rows"] for n in sources))
        row_share = np.array([self.weights[n] * sources[n]["rows"] / sources[n]["tokens"] for n in self.sources])
        quota = row_share / row_share.sum() * self.epoch_size
        counts = np.floor(quota).astype(np.int64)
        order = sorted(range(len(quota)), key=lambda i: (-(quota[i] - counts[i]), i))
        counts[order[: self.epoch_size - int(counts.sum())]] += 1
        self.epoch_counts = counts
        self.epoch_starts = np.concatenate([[0], np.cumsum(counts)])

        self.max_open_shards = max_open_shards
        self._open: OrderedDict = OrderedDict()
        self._perms: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        """Samples per epoch (iteration itself goes on across epochs)."""
        return self.epoch_size

    def __getstate__(self) -> dict:  # DataLoader workers open their own memory maps
        return {**self.__dict__, "_open": OrderedDict(), "_perms": OrderedDict()}

    def _permutation(self, n: int, key: tuple[int, ...]) -> Permutation:
        if key not in self._perms:
            self._perms[key] = Permutation(n, key)
            if len(self._perms) > 64:
                self._perms.popitem(last=False)
        return self._perms[key]

    def locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source number, row within the source) of global sample indices."""
        indices = np.asarray(indices, dtype=np.int64)
        epoch, position = np.divmod(indices, self.epoch_size)
        slot = np.empty_like(position)
        for e in np.unique(epoch).tolist():
            mine = epoch == e
            slot[mine] = self._permutation(self.epoch_size, (self.seed, 0, e))(position[mine])
        source = np.searchsorted(self.epoch_starts, slot, side="right") - 1
        drawn = epoch * self.epoch_counts[source] + slot - self.epoch_starts[source]
        cycle, within = np.divmod(drawn, self.source_rows[source])
        row = np.empty_like(within)
        for s, c in {(int(s), int(c)) for s, c in zip(source, cycle, strict=True)}:
            mine = (source == s) & (cycle == c)
            permutation = self._permutation(int(self.source_rows[s]), (self.seed, 1, self.source_keys[s], c))
            row[mine] = permutation(within[mine])
        return source, row

    def _arrays(self, source: int, shard: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = (source, shard)
        if key not in self._open:
            stem = self.folder / self.sources[source] / self.shards[source][shard]
            self._open[key] = tuple(np.load(f"{stem}.{kind}.npy", mmap_mode="r") for kind in ("tokens", "docs", "rows"))
            if len(self._open) > self.max_open_shards:  # each map holds a file descriptor
                self._open.popitem(last=False)
        self._open.move_to_end(key)
        return self._open[key]

    def read_row(self, source: int, row: int) -> dict:
        """Row `row` of source number `source` (in the order the packer wrote them)."""
        shard = int(np.searchsorted(self.shard_starts[source], row, side="right")) - 1
        tokens, docs, rows = self._arrays(source, shard)
        local = row - int(self.shard_starts[source][shard])
        bounds = np.array(docs[rows[local] : rows[local + 1] + 1])
        return {
            "input_ids": np.array(tokens[bounds[0] : bounds[-1]], dtype=np.int64),
            "cu_seqlens": (bounds - bounds[0]).astype(np.int32),
            "source": self.sources[source],
        }

    def row(self, index: int) -> dict:
        """Global sample `index` (any rank's)."""
        source, row = self.locate(np.array([index]))
        return self.read_row(int(source[0]), int(row[0]))

    __getitem__ = row

    def iter_from(self, sample_index: int = 0, stop: int | None = None, block: int = 1024) -> Iterator[dict]:
        """This rank's samples from global index `sample_index` on: sample_index + rank, + world_size, ... up to
        `stop` (exclusive; None: forever). Pass the number of samples all ranks consumed to resume."""
        start = sample_index + self.rank
        while stop is None or start < stop:
            end = start + block * self.world_size if stop is None else min(start + block * self.world_size, stop)
            indices = np.arange(start, end, self.world_size)
            for source, row in zip(*self.locate(indices), strict=True):
                yield self.read_row(int(source), int(row))
            start = end


def collate(rows: Sequence[dict]) -> dict:
    """A micro-batch of rows as the encoder's packed input: `model(input_ids=flat, cu_seqlens=cu, max_seqlen=L)`.
    Rows are concatenated; each row's document boundaries are shifted by the tokens before it."""
    row_starts = np.cumsum([0] + [len(r["input_ids"]) for r in rows])
    boundaries = [r["cu_seqlens"][1:].astype(np.int64) + start for r, start in zip(rows, row_starts, strict=False)]
    cu_seqlens = np.concatenate([np.zeros(1, np.int64), *boundaries])
    return {
        "input_ids": torch.from_numpy(np.concatenate([r["input_ids"] for r in rows])),
        "cu_seqlens": torch.from_numpy(cu_seqlens.astype(np.int32)),
        "max_seqlen": int(np.diff(cu_seqlens).max()) if len(cu_seqlens) > 1 else 0,
    }
