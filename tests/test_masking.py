"""MLM masking: rates, 80/10/10, special tokens never touched, random ids from the real vocabulary, reproducible
from (seed, step, micro-batch, rank) alone."""

from __future__ import annotations

import torch

from cmbert.pretrain.masking import MaskingVocab, mask_tokens, step_generator

VOCAB = MaskingVocab(mask_id=4, special_ids=(0, 1, 2, 3, 4, 60, 61, 62, 63), first_random_id=5, end_random_id=60)


def ids(n: int = 200_000) -> torch.Tensor:
    x = torch.randint(5, 60, (n,), generator=torch.Generator().manual_seed(1))
    x[::50] = 1  # [CLS]
    x[49::50] = 2  # [SEP]
    return x


def test_rates_and_the_80_10_10_split():
    x = ids()
    inputs, labels = mask_tokens(x, VOCAB, 0.3, step_generator(0, 1, 0, 0))
    chosen = labels != -100
    ordinary = ~torch.isin(x, torch.tensor(VOCAB.special_ids))
    assert abs(chosen.sum().item() / ordinary.sum().item() - 0.3) < 0.01
    assert torch.equal(labels[chosen], x[chosen]) and not chosen[~ordinary].any()
    assert torch.equal(inputs[~chosen], x[~chosen])  # nothing unchosen changes
    masked = (inputs == VOCAB.mask_id) & chosen
    changed = chosen & (inputs != x) & ~masked
    n = chosen.sum().item()
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    assert abs(changed.sum().item() / n - 0.1 * 54 / 55) < 0.01  # a random id can be the original one
    assert ((inputs[changed] >= 5) & (inputs[changed] < 60)).all()  # never a special or [unusedN] id


def test_masks_depend_only_on_seed_step_micro_and_rank():
    x = ids(5000)
    a = mask_tokens(x, VOCAB, 0.3, step_generator(7, 3, 1, 0))
    b = mask_tokens(x, VOCAB, 0.3, step_generator(7, 3, 1, 0))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    for other in (step_generator(8, 3, 1, 0), step_generator(7, 4, 1, 0), step_generator(7, 3, 0, 0),
                  step_generator(7, 3, 1, 1)):
        assert not torch.equal(mask_tokens(x, VOCAB, 0.3, other)[1], a[1])


def test_vocab_from_a_tokenizer(tmp_path):
    from cmbert.pretrain.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["chest pain, no fever; ___ denies dyspnea"] * 20, vocab_size=320)
    vocab = MaskingVocab.from_tokenizer(tokenizer)
    assert vocab.mask_id == tokenizer.mask_token_id
    assert set(range(5)) <= set(vocab.special_ids)
    assert vocab.end_random_id == tokenizer.convert_tokens_to_ids("[unused0]")
    assert vocab.first_random_id == 5
