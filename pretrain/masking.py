"""Masked-language-model inputs from packed rows, as ModernBERT trains: a rate of the ordinary tokens is chosen
(30 % in training, 15 % for evaluation), of those 80 % become [MASK], 10 % a random ordinary token, 10 % stay.
Special tokens ([CLS]/[SEP] around every document, [PAD], [UNK] and the [unusedN] fillers) are never chosen, and
random replacements are drawn only from the tokenizer's real vocabulary (below the first [unusedN]).

Masks come from a generator the caller seeds per step (see `step_generator`), so a resumed run masks exactly as
the uninterrupted one would, with no generator state to checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MaskingVocab:
    mask_id: int
    special_ids: tuple[int, ...]  # never masked, never drawn as a random replacement
    first_random_id: int  # random replacements are drawn from [first_random_id, end_random_id)
    end_random_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> MaskingVocab:
        special = sorted(set(tokenizer.all_special_ids))
        unused = tokenizer.convert_tokens_to_ids("[unused0]")
        end = unused if unused is not None and unused != tokenizer.unk_token_id else len(tokenizer)
        ordinary = [i for i in range(end) if i not in set(special)]
        if not ordinary:
            raise ValueError("the tokenizer has no ordinary tokens to mask")
        return cls(tokenizer.mask_token_id, tuple(special), ordinary[0], end)


def step_generator(seed: int, step: int, micro_batch: int, rank: int) -> torch.Generator:
    """A generator that depends only on (seed, step, micro-batch, rank): masks are reproducible from the step alone."""
    state = np.random.SeedSequence([seed, step, micro_batch, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def mask_tokens(input_ids: torch.Tensor, vocab: MaskingVocab, probability: float, generator: torch.Generator,
                mask_fraction: float = 0.8, random_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels): labels hold the original id where a token was chosen and -100 elsewhere."""
    special = torch.isin(input_ids, torch.tensor(vocab.special_ids, dtype=input_ids.dtype))
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & ~special
    labels = torch.where(chosen, input_ids, -100)
    roll = torch.rand(input_ids.shape, generator=generator)
    inputs = torch.where(chosen & (roll < mask_fraction), vocab.mask_id, input_ids)
    random_ids = torch.randint(vocab.first_random_id, vocab.end_random_id, input_ids.shape, generator=generator)
    random_slot = chosen & (roll >= mask_fraction) & (roll < mask_fraction + random_fraction)
    return torch.where(random_slot, random_ids, inputs), labels
