"""Labelled text for the generic recipes: readers, label vocabularies, BIO checks, tokenization and alignment.

Inputs (each split read whole into memory: these recipes are for user-sized labelled sets, not corpora):
- ``.csv`` (a header naming the configured columns), ``.jsonl`` / ``.ndjson`` (one object per line), either one
  gzipped (detected by content);
- a local `datasets` folder (`Dataset.save_to_disk` or `DatasetDict.save_to_disk`; never a hub name). A DatasetDict
  gives the split of the role being read (`validation` also answers to `val` and `dev`); `ClassLabel` ids are read as
  their names.

Classification (`TextExample`): one label per text, or with ``data.multi_label`` a list of labels (a list value, or a
string split on ``data.label_delimiter``; an empty one means "none of the labels"); with ``data.text_pair_column``
each example is a sentence pair (MedNLI-style premise and hypothesis), read as [CLS] text [SEP] pair [SEP]. Token
classification
(`TaggedExample`): words and one IOB2 tag per word (``O``, ``B-TYPE``, ``I-TYPE``); CSV cells hold both as
whitespace-separated strings.

Nothing is dropped silently. Skips are counted per split in a `SkipCounter` (reason -> count, with the first few
locations; never text): ``empty_text`` (no text / no words), ``empty_text_pair`` (a pair without its second text),
``missing_label`` (single-label: an empty label),
``length_mismatch`` (a different number of words and tags), ``missing_column`` (a JSONL record without a key the
first record has), ``not_json`` / ``invalid_utf8`` / ``malformed_row`` (unreadable records). ``I-X`` that
continues nothing (after ``O``, or after another type) is repaired to ``B-X`` and counted (``repaired_tags``): the
same reading seqeval's default mode and conlleval give it, so entity metrics do not change. Errors: a missing
column (naming the column and the file), a tag that is not IOB2, a list where one label is expected, and a
validation / test label that train never shows (the model has no output for it: move examples between splits or drop
the label; counting it as always wrong would hide the problem in an average).

Alignment (token classification): words are tokenized as running text would be (each word after the first with the
space before it, so a byte-level BPE sees " denies" exactly as in a sentence), and the fast tokenizer's `word_ids`
map tokens to words. The FIRST subword of each word carries the word's label; continuation subwords, [CLS], [SEP]
and padding get -100 (ignored by the loss), and a word's prediction is read from its first subword: one decision per
word, as CoNLL-style evaluation counts them. A text longer than ``model.max_length`` is cut (counted as
``truncated``); its words past the cut get no label in training and are predicted ``O`` in evaluation, so the
metrics still count every gold entity.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cmbert.core.errors import UserError
from cmbert.core.io import ReadError, SkipCounter, csv_records
from cmbert.data.inputs import dataset_records, json_lines

TAG = re.compile(r"(O|([BI])-(\S+))")
IGNORE = -100  # label of a token the loss and the metrics skip (transformers' convention)


@dataclass
class TextExample:
    text: str
    labels: tuple[str, ...]  # exactly one unless multi-label
    where: str = ""  # file and row, for predictions and errors (never text)
    pair: str | None = None  # the second text of a sentence pair (data.text_pair_column)


@dataclass
class TaggedExample:
    words: list[str]
    tags: list[str]  # IOB2, one per word
    where: str = ""


@dataclass
class Split:
    """One split as read: its examples, what was skipped, how many tags were repaired."""

    name: str
    source: str
    examples: list
    counter: SkipCounter
    repaired_tags: Counter[str] = field(default_factory=Counter)

    def report(self) -> dict:
        out = {"source": self.source, **self.counter.as_dict()}
        if self.repaired_tags:
            out["repaired_tags"] = dict(sorted(self.repaired_tags.items()))
        return out


# ---------------------------------------------------------------------------------------------------------- reading


def _jsonl_records(path: Path, counter: SkipCounter) -> Iterator[tuple[str, dict]]:
    for where, value, skip in json_lines(path, counter):
        if skip or not isinstance(value, dict):
            counter.skip(skip or "not_json", where)
            continue
        yield where, value


def read_records(path: str | Path, role: str, columns: tuple[str, ...], counter: SkipCounter,
                 ) -> Iterator[tuple[str, dict]]:
    """(where, row) for every readable record of a CSV / JSONL file or `datasets` folder; `columns` must exist."""
    path = Path(path)
    hint = "set data.*_column to the file's column names"
    if path.is_dir():
        records, available = dataset_records(path, role, counter)
        missing = [c for c in columns if c not in available]
        if missing:
            raise UserError(f"{path}: no column {', '.join(missing)} in the {role} split (its columns: "
                            f"{', '.join(available)}; {hint})")
        return records
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind == ".csv":
        return csv_records(path, columns, counter, kind=f"{role} data file ({hint})")
    if kind in (".jsonl", ".ndjson"):
        return _checked_jsonl(path, columns, counter)
    raise UserError(f"{path}: expected a .csv or .jsonl file (optionally .gz) or a `datasets` folder")


def _checked_jsonl(path: Path, columns: tuple[str, ...], counter: SkipCounter) -> Iterator[tuple[str, dict]]:
    """JSONL records; the first record sets the schema (a missing key there is an error), later records without a key
    are counted (`missing_column`)."""
    first = True
    for where, record in _jsonl_records(path, counter):
        missing = [c for c in columns if c not in record]
        if missing and first:
            raise ReadError(f"{path}: no key {', '.join(missing)} in the first record (its keys: "
                            f"{', '.join(map(str, record))[:200]}; set data.*_column to the file's keys)")
        first = False
        if missing:
            counter.skip("missing_column", f"{where}: {', '.join(missing)}")
            continue
        yield where, record


def _label_list(value, delimiter: str | None) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    if value is None:
        return ()
    text = str(value)
    parts = text.split(delimiter) if delimiter else [text]
    return tuple(p.strip() for p in parts if p.strip())


def read_text_split(path: str | Path, role: str, data) -> Split:
    """Classification examples of one split (`data` is the config's GenericDataConfig)."""
    counter = SkipCounter()
    examples = []
    columns = (data.text_column, *([data.text_pair_column] if data.text_pair_column else []), data.label_column)
    for where, row in read_records(path, role, columns, counter):
        text, value = row[data.text_column], row[data.label_column]
        pair = row[data.text_pair_column] if data.text_pair_column else None
        if not isinstance(text, str) or not text.strip():
            counter.skip("empty_text", where)
            continue
        if data.text_pair_column and (not isinstance(pair, str) or not pair.strip()):
            counter.skip("empty_text_pair", where)
            continue
        if data.multi_label:
            labels = _label_list(value, data.label_delimiter)
        else:
            if isinstance(value, (list, tuple, dict)):
                raise UserError(f"{where}: data.label_column {data.label_column!r} holds a list; set "
                                "data.multi_label=true for several labels per text")
            label = "" if value is None else str(value).strip()
            if not label:
                counter.skip("missing_label", where)
                continue
            labels = (label,)
        counter.kept += 1
        examples.append(TextExample(text, labels, where, pair))
    return Split(role, str(path), examples, counter)


def _word_list(value) -> list[str] | None:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, str):
        return value.split()
    return None


def repair_tags(tags: list[str], where: str) -> tuple[list[str], int]:
    """Tags checked as IOB2, with every `I-X` that continues nothing turned into `B-X`; returns (tags, repairs)."""
    out, repaired, previous = [], 0, "O"
    for tag in tags:
        match = TAG.fullmatch(tag)
        if match is None:
            raise UserError(f"{where}: tag {tag!r} is not IOB2 (O, B-TYPE or I-TYPE)")
        if match[2] == "I" and previous[2:] != match[3]:  # previous is O, or a B-/I- of another type
            tag = f"B-{match[3]}"
            repaired += 1
        out.append(tag)
        previous = tag
    return out, repaired


def read_tagged_split(path: str | Path, role: str, data) -> Split:
    """Token-classification examples of one split, tags checked and repaired."""
    counter = SkipCounter()
    split = Split(role, str(path), [], counter)
    for where, row in read_records(path, role, (data.words_column, data.tags_column), counter):
        words, tags = _word_list(row[data.words_column]), _word_list(row[data.tags_column])
        if not words or all(not w.strip() for w in words):
            counter.skip("empty_text", where)
            continue
        if tags is None or len(tags) != len(words):
            counter.skip("length_mismatch", f"{where}: {len(words)} words, {len(tags or [])} tags")
            continue
        tags, repaired = repair_tags([t.strip() for t in tags], where)
        if repaired:
            split.repaired_tags["I_without_B"] += repaired
        counter.kept += 1
        split.examples.append(TaggedExample(words, tags, where))
    return split


# --------------------------------------------------------------------------------------------------------- labels


def _natural(label: str):
    """Numbers in numeric order ("2" before "10"), then names alphabetically."""
    return (0, int(label), "") if re.fullmatch(r"-?\d+", label) else (1, 0, label)


def label_vocabulary(task: str, train: Split, multi_label: bool) -> list[str]:
    """The model's outputs, from train only: classify: the labels seen; tokens: O, then B-/I- of each entity type."""
    if task == "classify":
        labels = sorted({label for e in train.examples for label in e.labels}, key=_natural)
        if len(labels) < (1 if multi_label else 2):
            raise UserError(f"{train.source}: train has {len(labels)} distinct label(s); a classifier needs at "
                            f"least {1 if multi_label else 2}")
        return labels
    types = sorted({tag[2:] for e in train.examples for tag in e.tags if tag != "O"})
    if not types:
        raise UserError(f"{train.source}: train has no entity tags (every tag is O)")
    return ["O", *(f"{prefix}-{t}" for t in types for prefix in "BI")]


def check_known_labels(task: str, split: Split, vocabulary: list[str]) -> None:
    """A validation / test label that train never shows is an error (see the module docstring)."""
    known = set(vocabulary)
    if task == "classify":
        unseen = Counter(label for e in split.examples for label in e.labels if label not in known)
    else:
        unseen = Counter(tag[2:] for e in split.examples for tag in e.tags if tag not in known)
    if unseen:
        listed = ", ".join(f"{label!r} ({n}x)" for label, n in unseen.most_common(10))
        what = "labels" if task == "classify" else "entity types"
        raise UserError(f"{split.source}: {split.name} has {what} that train never shows: {listed}; the model has no "
                        "output for them: move examples into train or drop these labels")


# ---------------------------------------------------------------------------------------------------- tokenization


@dataclass
class Encoded:
    """Token ids of one split ([CLS] ... [SEP], at most max_length) and the targets the training loop needs."""

    ids: list[list[int]]
    targets: list[list[int]]  # classify: label ids per text; tokens: tag id per word
    # tokens: the position of each word's first subword, -1 for a word with no token left (past a cut, or a word the
    # tokenizer turns into nothing): such words get no label in training and are predicted O.
    word_positions: list[list[int]] | None
    truncated: int  # texts cut at max_length
    truncated_words: int = 0  # tokens: words past the cut


def _special_ids(tokenizer) -> tuple[int, int]:
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise UserError("the tokenizer has no [CLS] / [SEP] token: ModernBERT inputs are [CLS] text [SEP]")
    return tokenizer.cls_token_id, tokenizer.sep_token_id


def encode_texts(tokenizer, examples: list[TextExample], label_ids: dict[str, int], max_length: int,
                 batch: int = 1024) -> Encoded:
    cls_id, sep_id = _special_ids(tokenizer)
    ids, truncated = [], 0
    for start in range(0, len(examples), batch):
        chunk = examples[start : start + batch]
        texts = [e.text for e in chunk]
        if chunk[0].pair is not None:
            pair_ids, cut = _pair_ids(tokenizer, texts, [e.pair for e in chunk], max_length)
            ids += pair_ids
            truncated += cut
            continue
        for piece in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            truncated += len(piece) > max_length - 2
            ids.append([cls_id, *piece[: max_length - 2], sep_id])
    targets = [[label_ids[label] for label in e.labels] for e in examples]
    return Encoded(ids, targets, None, truncated)


def encode_pairs(tokenizer, texts: list[str], pairs: list[str], max_length: int) -> list[list[int]]:
    """Token ids of sentence pairs exactly as the tokenizer (and so transformers' text-classification pipeline, given
    {"text": ..., "text_pair": ...}) builds them: [CLS] text [SEP] pair [SEP], cut longest side first."""
    return _pair_ids(tokenizer, texts, pairs, max_length)[0]


def _pair_ids(tokenizer, texts: list[str], pairs: list[str], max_length: int) -> tuple[list[list[int]], int]:
    """`encode_pairs` and how many pairs were cut: every pair is tokenized whole once, and only those longer than
    max_length again, with the tokenizer's own longest-first truncation."""
    cls_id, sep_id = _special_ids(tokenizer)
    ids = tokenizer(texts, pairs)["input_ids"]
    for row in ids[:1]:
        if row[0] != cls_id or row.count(sep_id) < 2:
            raise UserError("the tokenizer does not join sentence pairs as [CLS] A [SEP] B [SEP] (its post-processor "
                            "has no pair template): sentence pairs need a ModernBERT tokenizer")
    long = [i for i, row in enumerate(ids) if len(row) > max_length]
    if long:
        cut = tokenizer([texts[i] for i in long], [pairs[i] for i in long], truncation="longest_first",
                        max_length=max_length)["input_ids"]
        for i, row in zip(long, cut, strict=True):
            ids[i] = row
    return ids, len(long)


def spaced_words(words: list[str]) -> list[str]:
    """Words as they stand in running text: each after the first with its leading space (see the module docstring)."""
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def align_words(word_ids: list[int | None], n_words: int, max_length: int) -> tuple[list[int], int]:
    """For each of `n_words` words, the position of its first subword in [CLS] tokens[: max_length - 2] [SEP]
    (-1 when none is left), and how many words lost every token to the cut. `word_ids` is the fast tokenizer's
    token -> word map of the uncut text."""
    positions = [-1] * n_words
    kept = word_ids[: max_length - 2]
    for position, word in enumerate(kept):
        if word is not None and positions[word] < 0:
            positions[word] = position + 1  # +1: [CLS] comes first
    cut_words = {w for w in word_ids[len(kept):] if w is not None and positions[w] < 0}
    return positions, len(cut_words)


def encode_words(tokenizer, examples: list[TaggedExample], tag_ids: dict[str, int], max_length: int,
                 batch: int = 1024) -> Encoded:
    cls_id, sep_id = _special_ids(tokenizer)
    ids, positions, truncated, truncated_words = [], [], 0, 0
    for start in range(0, len(examples), batch):
        chunk = examples[start : start + batch]
        encoding = tokenizer([spaced_words(e.words) for e in chunk], is_split_into_words=True,
                             add_special_tokens=False)
        for i, example in enumerate(chunk):
            pieces = encoding["input_ids"][i]
            word_positions, cut_words = align_words(encoding.word_ids(i), len(example.words), max_length)
            truncated += len(pieces) > max_length - 2
            truncated_words += cut_words
            ids.append([cls_id, *pieces[: max_length - 2], sep_id])
            positions.append(word_positions)
    targets = [[tag_ids[t] for t in e.tags] for e in examples]
    return Encoded(ids, targets, positions, truncated, truncated_words)


def token_labels(encoded: Encoded, index: int) -> list[int]:
    """Per-token labels of one text: each word's tag on its first subword, IGNORE everywhere else."""
    labels = [IGNORE] * len(encoded.ids[index])
    for position, tag in zip(encoded.word_positions[index], encoded.targets[index], strict=True):
        if position >= 0:
            labels[position] = tag
    return labels
