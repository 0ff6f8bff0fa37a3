"""A byte-level BPE tokenizer trained locally, shaped like ModernBERT's own.

ModernBERT's tokenizer (a modified OLMo BPE) is byte-level: an NFC normaliser, a ByteLevel pre-tokenizer (no prefix
space) and decoder, and five special tokens `[CLS] [SEP] [MASK] [PAD] [UNK]`. `[MASK]` strips the space to its left,
so in "chest [MASK] ." the model predicts " pain" (with its space), as ModernBERT does. Sequences are
`[CLS] A [SEP]` and pairs `[CLS] A [SEP] B [SEP]`, with no token type ids. The vocabulary is padded to a multiple of
64 in the model config (`padded_vocab_size`), not in the tokenizer: unused rows just never get a token.
`save_tokenizer` writes a folder that transformers 4.x and 5.x both load.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

# Ids 0..4 in this order, so they are the same for every vocabulary size and corpus.
SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")


def train_tokenizer(texts: Iterable[str], vocab_size: int, model_max_length: int = 8192) -> PreTrainedTokenizerFast:
    """Train a ModernBERT-style byte-level BPE on `texts` (any iterable of strings, streamed once)."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[
            AddedToken(t, lstrip=(t == "[MASK]"), rstrip=False, normalized=False, special=True)
            for t in SPECIAL_TOKENS
        ],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte has a token: nothing is ever [UNK]
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",  # no `:1` type ids: ModernBERT has no token types
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        mask_token=AddedToken("[MASK]", lstrip=True, rstrip=False, normalized=False, special=True),
        model_max_length=model_max_length,
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,  # byte-level decoding is exact; BERT's cleanup would eat spaces
    )


def padded_vocab_size(n: int, multiple: int = 64) -> int:
    """The smallest multiple of `multiple` that holds `n` tokens (ModernBERT's is 50,368 = 787 x 64)."""
    return -(-n // multiple) * multiple


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: str | Path) -> None:
    """`save_pretrained`, loadable by transformers 4.x as well: transformers 5 records the class as
    `TokenizersBackend`, which 4.x does not know, while `PreTrainedTokenizerFast` loads the same tokenizer.json in
    both (4.57 and 5.x then give identical ids and fill-mask results)."""
    tokenizer.save_pretrained(folder)
    path = Path(folder) / "tokenizer_config.json"
    data = json.loads(path.read_text())
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
