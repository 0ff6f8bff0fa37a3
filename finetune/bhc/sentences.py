"""A rule-based splitter for discharge-note text: headings, list items and sentences, with character offsets.

No trained sentence model is available offline (nltk's punkt needs a download), and clinical text breaks general
splitters anyway: `Dr. ___`, `b.i.d.`, `1.5 mg`, lab lines with no full stop, one-line headings. The rules:

1. Lines are structure. A blank line ends a block; so does every heading and list item. A line that starts with a
   lower-case letter and follows a text line that does not end in `. ! ? : ;` continues it (a hard-wrapped sentence).
2. Headings: a whole line ending in `:` of at most 6 words (`History of Present Illness:`, `ADMISSION LABS:`), or
   of at most 10 words after a `#` (`# Acute kidney injury:`, the problem headings of a hospital course); and inline
   labels, `Label: text` with a label of at most 5 words (`Service: MEDICINE`, `VS: T 100.2 ...`): the label is a
   heading unit and the text after it is split as a block of its own.
3. List items, `- x`, `* x`, `1. x`, `2) x`: one block each; the unit's span leaves the marker out.
4. Within a block, a sentence ends at `.`, `?` or `!` (closing quotes or brackets allowed) followed by white space and
   a capital letter, a `___` de-identification token or an opening quote/bracket before a capital, except after a
   clinical abbreviation (`Dr.`, `pt.`, `q.d.`, `b.i.d.`, `e.g.`, `i.e.`, `vs.`, `approx.`, `No.`, ...), any dotted
   abbreviation (`x.y.`), or a single letter (an initial). A decimal (`1.5`) never ends one: no space follows its dot.

Each unit keeps (start, end) offsets into the text (white space trimmed), its kind and the note section it falls
under: the latest whole-line heading written mostly in lower case (`History of Present Illness:`, `Discharge
Diagnosis:`), lower-cased. All-caps and `#` headings (`ON ADMISSION:`, `# UTI:`) and inline labels (`VS:`, `ED
vitals:`) are sub-headings inside a section and do not change it.

Candidate sentences for a summary (`candidate_sentences`) are the units that are not headings and hold a letter or
digit outside `___` tokens: headings, empty units and `___`-only units (`___`, `___.`) are dropped, since a summary
made of them says nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Lower-cased, trailing dot included. A full stop after one of these (then a space and a capital) is not a sentence
# end. "etc." is left out on purpose: it ends a sentence more often than not.
ABBREVIATIONS = frozenset({
    "dr.", "drs.", "mr.", "mrs.", "ms.", "pt.", "pts.", "st.", "no.", "nos.", "vs.", "approx.", "appt.", "dept.",
    "fig.", "hosp.", "inc.", "jr.", "sr.", "prof.", "sq.", "tab.", "tabs.", "cap.", "caps.", "disp.", "sig.", "hx.",
    "dx.", "tx.", "sx.", "yo.", "wk.", "wks.", "mo.", "mos.", "yr.", "yrs.", "hr.", "hrs.", "min.", "mins.", "sec.",
})
_DOTTED = re.compile(r"^(?:[a-z]\.){1,4}[a-z]?\.?$")  # q.d. b.i.d. e.g. i.e. p.o. a.m. U.S.
_SENTENCE_END = re.compile(r"[.?!][\"')\]]*(?=\s+(?:[A-Z]|___|[\"'(\[][A-Z]))")
_ITEM = re.compile(r"^(?:[-*\u2022]|\d{1,2}[.)])\s+(?=\S)")
_LINE_HEADING = re.compile(r"^(#\s*)?[A-Za-z][^:]*:$")
_INLINE_LABEL = re.compile(r"^(#\s*)?[A-Za-z][A-Za-z0-9 /&()'-]*:[ \t]+(?=\S)")
_ALNUM_OUTSIDE_DEID = re.compile(r"[A-Za-z0-9]")


@dataclass(frozen=True)
class Unit:
    """One heading, list item or sentence of a text: `text[start:end]`, its kind ("heading", "item", "sentence")
    and the section it falls under ("" before the first section heading)."""

    start: int
    end: int
    kind: str
    section: str


def unit_text(text: str, unit: Unit) -> str:
    """The unit's text on one line (a sentence hard-wrapped over lines gets spaces): a summary is one unit per line,
    as ROUGE-Lsum reads it."""
    return " ".join(text[unit.start:unit.end].split())


def _is_heading_line(line: str) -> bool:
    if not _LINE_HEADING.match(line):
        return False
    words = len(line.split())
    return words <= (10 if line.startswith("#") else 6)


def _section_name(heading: str) -> str | None:
    """The section a line heading opens, or None for a sub-heading (mostly capitals, or a `#` problem heading)."""
    label = heading.rstrip().rstrip(":").strip()
    if label.startswith("#") or sum(c.islower() for c in label) <= sum(c.isupper() for c in label):
        return None
    return " ".join(label.lower().split())


def _split_block(text: str, start: int, end: int, kind: str, section: str) -> list[Unit]:
    """Sentences of text[start:end] (one block: a paragraph, a list item's text or an inline label's text)."""
    units, begin = [], start
    for match in _SENTENCE_END.finditer(text, start, end):
        stop = match.end()
        if text[match.start()] == ".":
            word = text[begin:match.start() + 1].split()[-1].lower() if text[begin:match.start() + 1].split() else ""
            word = word.lstrip("([\"'")
            if word in ABBREVIATIONS or _DOTTED.match(word) or re.fullmatch(r"[a-z]\.", word):
                continue
        units.append((begin, stop))
        begin = stop
    units.append((begin, end))
    out = []
    for s, e in units:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s < e:
            # A list item's later sentences are sentences; the first keeps the item kind.
            out.append(Unit(s, e, kind if not out else "sentence", section))
    return out


def split_units(text: str) -> list[Unit]:
    """Every heading, list item and sentence of `text` in order (see the module docstring for the rules)."""
    units: list[Unit] = []
    section = ""
    block: list[int] | None = None  # [start, end, open]: the text block being built; open = may be continued
    block_kind = "sentence"

    def flush():
        nonlocal block
        if block is not None:
            units.extend(_split_block(text, block[0], block[1], block_kind, section))
            block = None

    offset = 0
    for raw in text.split("\n"):
        line_start, offset = offset, offset + len(raw) + 1
        if not raw.strip():
            flush()
            continue
        s = line_start + len(raw) - len(raw.lstrip())
        e = line_start + len(raw.rstrip())
        line = text[s:e]
        if _is_heading_line(line):
            flush()
            name = _section_name(line)
            section = name if name is not None else section
            units.append(Unit(s, e, "heading", section))
            continue
        item = _ITEM.match(line)
        if item:
            flush()
            block, block_kind = [s + item.end(), e], "item"
            continue
        label = _INLINE_LABEL.match(line)
        if label and len(line[:label.end()].split()) <= 5:
            flush()
            colon = s + line.index(":", 0, label.end()) + 1
            units.append(Unit(s, colon, "heading", section))
            block, block_kind = [s + label.end(), e], "sentence"
            continue
        if block is not None and line[0].islower() and text[block[1] - 1] not in ".!?:;":
            block[1] = e  # a hard-wrapped line continues the block
            continue
        flush()
        block, block_kind = [s, e], "sentence"
    flush()
    return units


def is_candidate(text: str, unit: Unit) -> bool:
    """A unit a summary may contain: not a heading, and some letter or digit outside `___` tokens."""
    return unit.kind != "heading" and bool(_ALNUM_OUTSIDE_DEID.search(text[unit.start:unit.end].replace("___", "")))


def candidate_sentences(text: str) -> list[Unit]:
    """The units of `text` a summary may be built from, in order (see `is_candidate`)."""
    return [u for u in split_units(text) if is_candidate(text, u)]


def assemble(text: str, units: list[Unit]) -> str:
    """A summary from chosen units of `text`: in source order, one per line."""
    return "\n".join(unit_text(text, u) for u in sorted(units, key=lambda u: u.start))


def lines_for_lsum(text: str) -> str:
    """`text` with one unit per line (headings kept): how a reference is laid out for ROUGE-Lsum, whose
    summary-level LCS runs over newline-separated sentences."""
    return "\n".join(unit_text(text, u) for u in split_units(text))
