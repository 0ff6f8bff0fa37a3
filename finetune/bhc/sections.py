"""Section headings of a MIMIC-IV discharge summary, and the split of its Brief Hospital Course (BHC) from the rest.

A heading is a known section name at the start of a line (leading spaces allowed), in any letter case and with any
run of spaces or tabs between its words, followed by a colon (text may follow on the same line: "Brief Hospital
Course: Mr. ___ is a ...") or standing alone on its line ("BRIEF HOSPITAL COURSE", optionally underlined by a line
of `=` or `-`, which belongs to the heading). Names are matched whole: "Hospital Course by Day:" is not a BHC heading,
"Pertinent Results of the echo" is not a heading at all.

- BHC headings (`BHC_HEADING`): "Brief Hospital Course", "Hospital Course", each optionally followed by "by
  problem(s)" / "by system(s)" / "by issue(s)" ("Brief Hospital Course by Problem:").
- Top-level headings (`TOP_LEVEL_HEADINGS`): the MIMIC-IV discharge layout with the spelling
  variants real notes use: Chief Complaint, Major Surgical or Invasive Procedure, History of Present Illness, Past
  Medical History, Social History, Family History, (Admission / Discharge) Physical Exam(ination), Pertinent Results,
  Medications on Admission, Discharge Medication(s), Discharge Disposition, Discharge Diagnosis / Diagnoses,
  Discharge Condition, Discharge Instructions, Followup / Follow-up / Follow up Instructions.

The BHC section runs from its heading to the next top-level heading. Everything else is left inside it: the problem
sub-headings authors write in a BHC ("ACUTE ISSUES:", "ACTIVE ISSUES:", "CHRONIC ISSUES:", "# Pneumonia:", "ICU
COURSE:", "HOSPITAL COURSE BY DAY:", "NEURO:", "TRANSITIONAL ISSUES:", "OUTPATIENT ISSUES:") are not in either list.
Choices, on purpose:
- TRANSITIONAL ISSUES stays in the target. In real MIMIC it sits inside the BHC section and the benchmark paper
  (Aali et al. 2024) keeps the BHC section whole as the target; so do we.
- A second BHC heading while the section is still open ("Brief Hospital Course:" ... "Hospital Course by Problem:")
  continues the section: the target is everything from the first heading to the next top-level heading, the second
  heading line included as text.
- Two BHC sections with another top-level section between them are ambiguous (which one is the summary, and the other
  would leak it into the source): the note is skipped as ``multiple_bhc_sections``.
- A top-level name followed by a colon ends the BHC even with text on its line ("Discharge Condition: stable"), as
  MIMIC's template headings sometimes carry their value; a BHC line starting with such a name ends the target early.
  MIMIC's template writes these headings alone on their line, so this is rare.

`split_bhc` returns the (source, target) pair or the reason there is none: ``no_bhc_section``,
``multiple_bhc_sections``, ``empty_bhc_section``. The source is the note without the BHC section (heading included),
its other sections kept in order, or, with `source_sections="before"`, only what precedes the BHC heading: the
sections after it (Discharge Diagnosis, Discharge Instructions, the discharge medications) restate what the BHC says,
so "before" is a harder, leak-free variant. The default, "all", is the paper's source: the rest of the note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cmbert.core.errors import UserError

SOURCE_SECTIONS = ("all", "before")

# Regex fragments, one per name; a space inside a name matches any run of spaces or tabs.
BHC_HEADING = r"(?:brief hospital course|hospital course)(?: by (?:problems?|systems?|issues?))?"
TOP_LEVEL_HEADINGS = (
    r"chief complaint",
    r"major surgical or invasive procedures?",
    r"history of present illness",
    r"past medical history",
    r"social history",
    r"family history",
    r"(?:admission |discharge )?physical exam(?:ination)?",
    r"pertinent results",
    r"medications on admission",
    r"discharge medications?",
    r"discharge disposition",
    r"discharge diagnos[ie]s",
    r"discharge condition",
    r"discharge instructions",
    r"follow(?:-| )?up instructions",
)


def _words_flexible(fragment: str) -> str:
    return fragment.replace(" ", r"[ \t]+")


# Group `bhc` or `other` holds the name; the heading ends after its colon, or at the end of a line that holds only the
# name (then an underline line of = or - is taken with it). `___` is never an underline: it is MIMIC's de-id token.
_HEADING = re.compile(
    r"^[ \t]*(?:(?P<bhc>" + _words_flexible(BHC_HEADING) + r")|(?P<other>"
    + "|".join(_words_flexible(name) for name in TOP_LEVEL_HEADINGS) + r"))"
    r"(?:[ \t]*:|[ \t\r]*(?:\n[ \t]*[=-]{3,}[ \t\r]*)?(?=\n|\Z))",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class Heading:
    start: int  # offset of the heading's line start in the text
    end: int  # offset just after the heading (its colon, or its line / underline): the body starts here
    name: str  # as written, spaces collapsed ("BRIEF HOSPITAL COURSE")
    is_bhc: bool


@dataclass(frozen=True)
class BhcSplit:
    source: str
    target: str
    heading: str  # the BHC heading as written, spaces collapsed (for the report's variant counts)
    continued: bool  # a second BHC heading continued the section (see the module docstring)


def find_headings(text: str) -> list[Heading]:
    """The known section headings of a discharge summary, in order (see the module docstring for what counts)."""
    headings = []
    for match in _HEADING.finditer(text):
        name = match.group("bhc") or match.group("other")
        headings.append(Heading(match.start(), match.end(), " ".join(name.split()), match.group("bhc") is not None))
    return headings


def split_bhc(text: str, source_sections: str = "all") -> BhcSplit | str:
    """The note split into source (the note without its BHC section) and target (the BHC section's body), both
    stripped of surrounding whitespace; or the reason there is no pair: "no_bhc_section", "multiple_bhc_sections",
    "empty_bhc_section"."""
    if source_sections not in SOURCE_SECTIONS:
        raise UserError(f"source_sections must be one of {', '.join(SOURCE_SECTIONS)}, got {source_sections!r}")
    sections: list[tuple[Heading, int]] = []  # (BHC heading, end of its body)
    open_heading: Heading | None = None
    continued = False
    for heading in find_headings(text):
        if heading.is_bhc:
            if open_heading is None:
                open_heading = heading
            else:
                continued = True  # a second BHC heading inside the open section: a sub-heading of it
        elif open_heading is not None:
            sections.append((open_heading, heading.start))
            open_heading = None
    if open_heading is not None:
        sections.append((open_heading, len(text)))
    if not sections:
        return "no_bhc_section"
    if len(sections) > 1:
        return "multiple_bhc_sections"
    heading, body_end = sections[0]
    target = text[heading.end:body_end].strip()
    if not target:
        return "empty_bhc_section"
    before, after = text[:heading.start].strip(), text[body_end:].strip()
    source = before if source_sections == "before" else "\n\n".join(part for part in (before, after) if part)
    return BhcSplit(source=source, target=target, heading=heading.name, continued=continued)
