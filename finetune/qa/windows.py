"""Questions and contexts as model windows, and answer spans between characters and tokens.

A window is ``[CLS] question [SEP] piece of the context [SEP]``. The question and the context are tokenized apart
(the context once, however many questions share it), the question cut to ``max_question_tokens`` (counted), and the
context read in pieces of ``room = max_length - question tokens - 3`` tokens that start ``room - doc_stride`` tokens
apart: consecutive windows share ``doc_stride`` tokens (transformers' overflowing `stride`), every context token is in
some window, and an answer of at most ``doc_stride + 1`` tokens lies whole in at least one window.

Training targets (transformers' run_qa convention): the answer's first and last token positions in the window when
the whole answer lies inside it, else [CLS] (position 0) for both, "no answer in this window"; unanswerable questions
target [CLS] in every window. Only the first gold answer trains (SQuAD train sets have one).

Offsets: the fast tokenizer's character offsets of each context token, with leading whitespace trimmed (a byte-level
BPE token " nodule" spans the space before the word), so a predicted span starts on its first visible character and
`context[start:end]` is exactly the answer text. An answer maps to the tokens that overlap it: the first token
ending after its start and the last token starting before its end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cmbert.finetune.qa.data import QaExample


@dataclass
class Windows:
    """Every window of one split, flat, with what maps each back to its question and context."""

    ids: list[list[int]] = field(default_factory=list)
    example: list[int] = field(default_factory=list)  # index into the split's examples
    context_start: list[int] = field(default_factory=list)  # window position of the first context token
    token_start: list[int] = field(default_factory=list)  # context token index of that token
    n_context: list[int] = field(default_factory=list)  # context tokens in the window
    start_positions: list[int] = field(default_factory=list)  # training targets; 0 = [CLS]
    end_positions: list[int] = field(default_factory=list)
    offsets: list[np.ndarray] = field(default_factory=list)  # per example: [context tokens, 2] trimmed char spans
    truncated_questions: int = 0
    # answerable questions no window holds whole (an answer longer than doc_stride + 1 tokens across an edge): every
    # window targets [CLS], so training never sees the span; raise doc_stride or max_length if this is not 0
    unreachable_answers: int = 0
    context_tokens: list[int] = field(default_factory=list)  # per example

    def __len__(self) -> int:
        return len(self.ids)


def trimmed_offsets(text: str, offsets) -> np.ndarray:
    """Character spans of tokens with their leading whitespace removed (a whitespace-only token keeps its span)."""
    out = np.asarray(offsets, dtype=np.int64).reshape(-1, 2).copy()
    for row in out:
        start, end = int(row[0]), int(row[1])
        while start < end and text[start].isspace():
            start += 1
        if start < end:
            row[0] = start
    return out


def answer_tokens(offsets: np.ndarray, start: int, end: int) -> tuple[int, int]:
    """The first and last context token overlapping characters [start, end) (end exclusive)."""
    first = int(np.searchsorted(offsets[:, 1], start, side="right"))  # first token ending after `start`
    last = int(np.searchsorted(offsets[:, 0], end, side="left")) - 1  # last token starting before `end`
    return first, max(last, first)


def window_starts(n_tokens: int, room: int, stride: int) -> list[int]:
    """Context token index where each window begins: steps of room - stride until a window reaches the end."""
    starts = [0]
    while starts[-1] + room < n_tokens:
        starts.append(starts[-1] + room - stride)
    return starts


def make_windows(tokenizer, examples: list[QaExample], max_length: int, doc_stride: int,
                 max_question_tokens: int) -> Windows:
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    windows = Windows()
    contexts: dict[str, tuple[list[int], np.ndarray]] = {}  # a SQuAD paragraph's questions share its context
    for index, example in enumerate(examples):
        if example.context not in contexts:
            # verbose=False: a context longer than the tokenizer's model_max_length is expected (it is windowed)
            encoded = tokenizer(example.context, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            contexts[example.context] = (encoded["input_ids"],
                                         trimmed_offsets(example.context, encoded["offset_mapping"]))
        context_ids, offsets = contexts[example.context]
        question = tokenizer(example.question, add_special_tokens=False, verbose=False)["input_ids"]
        if len(question) > max_question_tokens:
            question = question[:max_question_tokens]
            windows.truncated_questions += 1
        room = max_length - len(question) - 3
        target = None
        if example.answers:
            text, start = example.answers[0]
            target = answer_tokens(offsets, start, start + len(text))
        windows.offsets.append(offsets)
        windows.context_tokens.append(len(context_ids))
        head = [cls_id, *question, sep_id]
        reached = False
        for first in window_starts(len(context_ids), room, doc_stride):
            piece = context_ids[first : first + room]
            windows.ids.append([*head, *piece, sep_id])
            windows.example.append(index)
            windows.context_start.append(len(head))
            windows.token_start.append(first)
            windows.n_context.append(len(piece))
            inside = target is not None and first <= target[0] and target[1] < first + len(piece)
            reached |= inside
            windows.start_positions.append(len(head) + target[0] - first if inside else 0)
            windows.end_positions.append(len(head) + target[1] - first if inside else 0)
        windows.unreachable_answers += target is not None and not reached
    return windows


def collate_windows(windows: Windows, idx, pad_id: int):
    """Padded input ids, attention mask, and the start / end targets of the windows `idx`."""
    import torch

    from cmbert.core.loop import padded

    input_ids, mask = padded([windows.ids[i] for i in idx], pad_id)
    starts = torch.tensor([windows.start_positions[i] for i in idx])
    ends = torch.tensor([windows.end_positions[i] for i in idx])
    return input_ids, mask, starts, ends
