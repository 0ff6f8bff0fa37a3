"""The BHC dataset builder (finetune/bhc/): the section split on hand-written notes with every heading variant, the
cleaning rules and each skip reason, the patient split, the length statistics by context budget on hand-checkable
numbers (a word-level tokenizer: one token a word), and `cmbert bhc prepare` end to end on synthetic MIMIC notes."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest

import cmbert.cli
from cmbert.data.readers import MIMIC_NOTE_COLUMNS, read_mimic_notes
from cmbert.data.synth import synthesize_mimic
from cmbert.finetune.bhc.prepare import (
    SPLITS,
    CleaningRules,
    budget_fits,
    length_summary,
    make_pair,
    normalise_whitespace,
    prepare_bhc_dataset,
    read_pairs,
)
from cmbert.finetune.bhc.sections import BhcSplit, find_headings, split_bhc

PATIENTS = 40  # ~100 synthetic discharge notes: seconds to generate, tokenize and split

BEFORE = ("Name:  ___                     Unit No:   ___\n\nService: MEDICINE\n\nChief Complaint:\nshortness of breath\n\n"
          "History of Present Illness:\nMr. ___ is a ___ man with COPD who presented with two days of worsening "
          "dyspnea and productive cough.\n\nPertinent Results:\n___ 06:10AM BLOOD WBC-12.1 Hgb-13.2")
AFTER = ("Medications on Admission:\n1. Albuterol inhaler\n\nDischarge Medications:\n1. Prednisone 40 mg PO DAILY\n\n"
         "Discharge Diagnosis:\nCOPD exacerbation\n\nDischarge Instructions:\nYou were admitted for a COPD flare.\n\n"
         "Followup Instructions:\n___")
BODY = ("Mr. ___ was admitted with a COPD exacerbation.\n\nACUTE ISSUES:\n# COPD exacerbation: treated with "
        "prednisone and azithromycin, weaned to room air.\n# Pneumonia:\nno infiltrate on imaging.\n\nCHRONIC ISSUES:\n"
        "# Hypertension: continued lisinopril.\n\nTRANSITIONAL ISSUES:\n- Repeat chest x-ray in 6 weeks.\n"
        "OUTPATIENT ISSUES:\n- Sleep study.")


def split_of(note: str, **options) -> BhcSplit:
    result = split_bhc(note, **options)
    assert isinstance(result, BhcSplit), result
    return result


# ------------------------------------------------------------------------------------------------ the section split


@pytest.mark.parametrize("heading", [
    "Brief Hospital Course:\n",
    "BRIEF HOSPITAL COURSE:\n",
    "Hospital Course:\n",
    "HOSPITAL COURSE:\n",
    "Brief Hospital Course by Problem:\n",
    "BRIEF HOSPITAL COURSE BY SYSTEMS:\n",
    "brief hospital course:\n",
    "Brief Hospital Course: ",  # text follows on the heading's line
    "   Brief   Hospital  Course :  \n",  # extra spaces, a space before the colon
    "Brief\tHospital Course:\n",
    "Brief Hospital Course\n=====\n",  # underlined: the underline belongs to the heading
    "BRIEF HOSPITAL COURSE\n-----------\n",
    "BRIEF HOSPITAL COURSE\n",  # alone on its line, no colon
])
def test_bhc_heading_variants(heading):
    split = split_of(f"{BEFORE}\n\n{heading}{BODY}\n\n{AFTER}")
    assert split.target == BODY
    assert split.source == f"{BEFORE}\n\n{AFTER}"
    assert split.heading.lower() in " ".join(heading.replace(":", " ").split()).lower()
    assert not split.continued


@pytest.mark.parametrize("end", ["Medications on Admission:", "MEDICATIONS ON ADMISSION:", "Discharge Medications:",
                                 "DISCHARGE MEDICATIONS:", "Discharge Disposition:", "Discharge Diagnosis:",
                                 "DISCHARGE DIAGNOSES:", "Discharge Condition:", "Discharge Instructions:",
                                 "Followup Instructions:", "Follow-up Instructions:", "Pertinent Results:",
                                 "Discharge Physical Exam:", "Discharge Condition: stable"])
def test_bhc_ends_at_the_next_top_level_heading(end):
    split = split_of(f"{BEFORE}\n\nBrief Hospital Course:\n{BODY}\n\n{end}\nsomething after")
    assert split.target == BODY
    assert split.source.endswith(f"{end}\nsomething after")


def test_problem_subheadings_stay_inside_the_target():
    subheadings = ["ACUTE ISSUES:", "ACTIVE ISSUES:", "CHRONIC ISSUES:", "STABLE ISSUES:", "# Pneumonia:",
                   "# MICU course:", "ICU COURSE:", "HOSPITAL COURSE BY DAY:", "DETAILED COURSE:", "NEURO:", "CV:",
                   "TRANSITIONAL ISSUES:", "OUTPATIENT ISSUES:", "BRIEF SUMMARY: 65M with COPD", "CODE: Full",
                   "# Discharge planning: home with services", "Discharge labs stable."]
    body = "\n".join(f"{line}\ntext under it." for line in subheadings)
    split = split_of(f"{BEFORE}\n\nBrief Hospital Course:\n{body}\n\n{AFTER}")
    assert split.target == body  # TRANSITIONAL ISSUES is part of the target: the paper keeps the BHC whole
    assert [h.name for h in find_headings(body)] == []


def test_missing_empty_and_repeated_sections():
    assert split_bhc(f"{BEFORE}\n\n{AFTER}") == "no_bhc_section"
    # the words in running text, or a sub-heading that is not a BHC name, are not a section
    assert split_bhc(f"{BEFORE}\nThe hospital course: was long.\n\nHospital Course by Day:\nHD1 ...\n{AFTER}") \
        == "no_bhc_section"
    assert split_bhc(f"{BEFORE}\n\nBrief Hospital Course:\n \n\n{AFTER}") == "empty_bhc_section"
    assert split_bhc(f"{BEFORE}\n\nBrief Hospital Course:") == "empty_bhc_section"
    two = f"{BEFORE}\n\nBrief Hospital Course:\n{BODY}\n\n{AFTER}\n\nBrief Hospital Course:\nagain\n"
    assert split_bhc(two) == "multiple_bhc_sections"


def test_a_second_bhc_heading_inside_the_section_continues_it():
    body = f"65M admitted with COPD.\n\nHospital Course by Problem:\n{BODY}"
    split = split_of(f"{BEFORE}\n\nBrief Hospital Course:\n{body}\n\n{AFTER}")
    assert split.target == body and split.continued and split.heading == "Brief Hospital Course"


def test_bhc_at_the_end_and_source_sections_before():
    at_end = split_of(f"{BEFORE}\n\nBrief Hospital Course: {BODY}\n")
    assert (at_end.source, at_end.target) == (BEFORE, BODY)
    before = split_of(f"{BEFORE}\n\nBrief Hospital Course:\n{BODY}\n\n{AFTER}", source_sections="before")
    assert before.source == BEFORE and before.target == BODY  # no Discharge Diagnosis / Instructions in the source
    with pytest.raises(ValueError, match="source_sections"):
        split_bhc(BEFORE, source_sections="after")


# ------------------------------------------------------------------------------------------------ cleaning rules


def words(n: int, word: str = "word") -> str:
    return " ".join([word] * n)


def test_whitespace_normalisation():
    raw = "Chief Complaint:  \r\nfever \t\n \n \n \n   indented line\r\n\n\n\nend \n \n"
    assert normalise_whitespace(raw) == "Chief Complaint:\nfever\n\n   indented line\n\nend"


def test_cleaning_rules_and_skip_reasons():
    rules = CleaningRules()  # >= 20 target words, >= 100 source words, ___ kept
    source = f"Chief Complaint:\n{words(98)} ___"
    ok = make_pair(f"{source}\n \nBrief Hospital Course:\n{words(19)} ___ \n \n \n", rules)
    assert isinstance(ok, BhcSplit) and ok.target == f"{words(19)} ___" and ok.source == source
    replaced = make_pair(f"{source}\nBrief Hospital Course:\n{words(19)} ___", CleaningRules(deid_token="[DEID]"))
    assert replaced.target.endswith("word [DEID]") and replaced.source.endswith("word [DEID]")
    assert "___" not in replaced.source + replaced.target
    crlf = make_pair(f"{source}\r\n \r\nBrief Hospital Course:\r\n{words(19)} ___ \r\n", rules)
    assert (crlf.source, crlf.target) == (ok.source, ok.target)

    def reason(target: str, before: str = source, **options) -> str:
        return make_pair(f"{before}\nBrief Hospital Course:\n{target}\n", CleaningRules(**options))

    assert reason("See above.") == "boilerplate_target"
    assert reason("Please refer to the discharge summary for details. ___") == "boilerplate_target"
    assert reason("N/A") == "boilerplate_target"
    assert reason(" ".join(["___"] * 15 + ["seen"] * 14)) == "deid_target"
    assert reason(words(19)) == "short_target"
    assert reason(words(5), min_target_words=5) != "short_target"
    assert reason(words(20), before=f"Chief Complaint:\n{words(97)}") == "short_source"
    assert reason(words(20), before="Chief Complaint:\nfever") == "short_source"
    with pytest.raises(ValueError):
        CleaningRules(min_target_words=0).check()
    with pytest.raises(ValueError):
        CleaningRules(source_sections="after").check()


def test_length_summary_and_budget_fits_by_hand():
    assert length_summary([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]) == {"p10": 2.0, "p50": 6.0, "p90": 10.0, "max": 11,
                                                                   "mean": 6.0}
    assert length_summary([])["p50"] is None
    fits = budget_fits([510, 511, 2046, 2047, 4094, 4095, 8190, 8191], special_tokens=2)
    assert {b: f["count"] for b, f in fits.items()} == {"512": 1, "2048": 3, "4096": 5, "8192": 7}
    assert fits["512"]["share"] == 0.125 and fits["8192"]["share"] == 0.875


# --------------------------------------------------------------------------------------- builds on hand-made notes


def write_discharge(path: Path, rows: list[dict], extra_lines: bytes = b"") -> Path:
    """A MIMIC-format discharge.csv.gz; `extra_lines` are appended raw (malformed rows, bad bytes)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MIMIC_NOTE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({"note_type": "DS", "note_seq": "1", "charttime": "2180-01-01 00:00:00", "storetime": "",
                         **row})
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as file:
        file.write(buffer.getvalue().encode("utf-8") + extra_lines)
    return path


def note_row(subject: int, seq: int, text: str, **fields) -> dict:
    return {"note_id": f"{subject}-DS-{seq}", "subject_id": str(subject), "hadm_id": str(20_000_000 + subject * 10 + seq),
            "text": text, **fields}


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory) -> Path:
    """One token per whitespace word and [CLS] ... [SEP] around a sequence: token counts are word counts."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    folder = tmp_path_factory.mktemp("word-tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                            unk_token="[UNK]").save_pretrained(folder)
    return folder


def test_budget_table_on_hand_made_notes(tmp_path, word_tokenizer):
    # source = "Chief Complaint:" + filler = exactly n words; the encoder adds [CLS] and [SEP]
    sizes = [100, 510, 511, 2046, 2047, 4094, 4095, 8190, 8191]
    rows = [note_row(10 + i, 1, f"Chief Complaint:\n{words(n - 2)}\n \nBrief Hospital Course:\n{words(20 + i)}\n")
            for i, n in enumerate(sizes)]
    notes = write_discharge(tmp_path / "raw" / "discharge.csv.gz", rows)
    report = prepare_bhc_dataset(notes, tmp_path / "out", tokenizer=word_tokenizer, verbose=False)
    lengths = report["lengths"]
    assert report["settings"]["special_tokens"] == 2
    assert {b: f["count"] for b, f in lengths["source_fits"].items()} == {"512": 2, "2048": 4, "4096": 6, "8192": 8}
    assert lengths["source_fits"]["8192"]["share"] == round(8 / 9, 4)
    assert lengths["source_tokens"]["max"] == 8191 and lengths["source_words"]["max"] == 8191
    assert lengths["target_tokens"]["p50"] == 24.0 and lengths["target_words"]["max"] == 28
    assert lengths["source_words"]["p50"] == 2047.0
    assert sum(report["splits"][s]["pairs"] for s in SPLITS) == 9


def test_every_skip_reason_is_counted(tmp_path):
    source = f"Chief Complaint:\n{words(120)}"
    good = f"{source}\nBrief Hospital Course:\n{words(30)}"
    rows = [
        note_row(1, 1, good),
        note_row(1, 1, good),  # same note_id again
        note_row(2, 1, good, note_type="RR"),
        note_row(3, 1, source),
        note_row(4, 1, f"{source}\nBrief Hospital Course:\n \nMedications on Admission:\nnone"),
        note_row(5, 1, f"{good}\nDischarge Diagnosis:\nx\nBrief Hospital Course:\n{words(30)}"),
        note_row(6, 1, f"{source}\nBrief Hospital Course:\nSee above."),
        note_row(7, 1, f"{source}\nBrief Hospital Course:\n{' '.join(['___'] * 30)}"),
        note_row(8, 1, f"{source}\nBrief Hospital Course:\n{words(10)}"),
        note_row(9, 1, f"Chief Complaint:\nfever\nBrief Hospital Course:\n{words(30)}"),
        note_row(11, 1, good, hadm_id=""),  # kept, with hadm_id null
        note_row(12, 1, good),
        note_row(13, 1, good),
        note_row(14, 1, "  \n "),
        note_row(15, 1, good, subject_id="x"),
    ]
    extra = b'16-DS-1,16,3,DS,1\n17-DS-1,17,4,DS,1,2180-01-01 00:00:00,,"bad \xff byte"\n'
    notes = write_discharge(tmp_path / "raw" / "discharge.csv.gz", rows, extra)
    report = prepare_bhc_dataset(notes, tmp_path / "out", verbose=False)
    counts = report["notes"]
    assert counts["skipped"] == {"duplicate_note": 1, "not_discharge_summary": 1, "no_bhc_section": 1,
                                 "empty_bhc_section": 1, "multiple_bhc_sections": 1, "boilerplate_target": 1,
                                 "deid_target": 1, "short_target": 1, "short_source": 1, "empty_text": 1,
                                 "bad_subject_id": 1, "malformed_row": 1, "invalid_utf8": 1}
    assert counts["read"] == 17 and counts["kept"] == report["pairs"] == 4
    assert counts["examples"]["deid_target"] == ["note_id 7-DS-1"]
    pairs = [pair for split in SPLITS for pair in read_pairs(tmp_path / "out", split)]
    assert sorted(p["note_id"] for p in pairs) == ["1-DS-1", "11-DS-1", "12-DS-1", "13-DS-1"]
    assert next(p for p in pairs if p["note_id"] == "11-DS-1")["hadm_id"] is None
    assert all(set(p) == {"note_id", "subject_id", "hadm_id", "source", "target"} for p in pairs)
    assert "source_tokens" not in report["lengths"] and "source_fits" not in report["lengths"]


def test_output_folder_rules(tmp_path):
    rows = [note_row(1, 1, f"Chief Complaint:\n{words(120)}\nBrief Hospital Course:\n{words(30)}")]
    mimic = tmp_path / "mimic"
    write_discharge(mimic / "note" / "discharge.csv.gz", rows)
    out = tmp_path / "bhc"
    with pytest.raises(ValueError, match="inside the MIMIC-IV folder"):
        prepare_bhc_dataset(mimic, mimic / "bhc", verbose=False)
    with pytest.raises(ValueError, match="inside the MIMIC-IV folder"):
        prepare_bhc_dataset(mimic / "note" / "discharge.csv.gz", mimic / "derived" / "bhc", verbose=False)
    lone = write_discharge(tmp_path / "raw" / "discharge.csv.gz", rows)
    with pytest.raises(ValueError, match="beside the input file"):
        prepare_bhc_dataset(lone, tmp_path / "raw" / "bhc", verbose=False)
    first = prepare_bhc_dataset(mimic, out, verbose=False)
    written = {path.name: path.read_bytes() for path in out.iterdir()}
    with pytest.raises(FileExistsError, match="already there"):
        prepare_bhc_dataset(mimic, out, verbose=False)
    assert prepare_bhc_dataset(mimic, out, overwrite=True, verbose=False) == first
    assert {path.name: path.read_bytes() for path in out.iterdir()} == written  # same inputs, same bytes
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not ours")
    with pytest.raises(FileExistsError, match="not a BHC dataset"):
        prepare_bhc_dataset(mimic, other, overwrite=True, verbose=False)
    with pytest.raises(FileNotFoundError, match="note/discharge"):
        prepare_bhc_dataset(tmp_path / "other", tmp_path / "x", verbose=False)
    with pytest.raises(FileNotFoundError, match="hub name"):
        prepare_bhc_dataset(mimic, tmp_path / "y", tokenizer="answerdotai/ModernBERT-base", verbose=False)
    empty = write_discharge(tmp_path / "empty" / "discharge.csv.gz", [note_row(1, 1, "no sections here")])
    with pytest.raises(ValueError, match="no BHC pairs .* no_bhc_section 1"):
        prepare_bhc_dataset(empty, tmp_path / "z", verbose=False)
    assert not (tmp_path / "z").exists() and not (tmp_path / "z.partial").exists()


# ---------------------------------------------------------------------------------- end to end on synthetic MIMIC


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mimic")
    synthesize_mimic(root, PATIENTS, seed=0)
    return root


@pytest.fixture(scope="module")
def bpe(synth, tmp_path_factory) -> Path:
    from cmbert.core.tokenizer_files import save_tokenizer
    from cmbert.pretrain.tokenizer import train_tokenizer

    folder = tmp_path_factory.mktemp("bpe")
    texts = [note.text for note in read_mimic_notes(synth / "note" / "discharge.csv.gz")]
    save_tokenizer(train_tokenizer(texts, vocab_size=640, model_max_length=512), folder)
    return folder


@pytest.fixture(scope="module")
def built(synth, bpe, tmp_path_factory):
    """`cmbert bhc prepare` run through cmbert.main, with what it printed."""
    out = tmp_path_factory.mktemp("bhc") / "data"
    capture = pytest.MonkeyPatch()
    stdout, stderr = io.StringIO(), io.StringIO()
    capture.setattr("sys.stdout", stdout)
    capture.setattr("sys.stderr", stderr)
    try:
        cmbert.cli.main(["bhc", "prepare", "--mimic", str(synth), "--out", str(out), "--tokenizer", str(bpe)])
    finally:
        capture.undo()
    return out, stdout.getvalue(), stderr.getvalue()


def test_end_to_end_every_note_is_a_pair_or_a_counted_skip(synth, built):
    out, stdout, _ = built
    report = json.loads((out / "report.json").read_text())
    raw = list(read_mimic_notes(synth / "note" / "discharge.csv.gz"))
    notes = report["notes"]
    assert notes["read"] == len(raw) and notes["read"] == notes["kept"] + sum(notes["skipped"].values())
    pairs = {split: list(read_pairs(out, split)) for split in SPLITS}
    written = [pair["note_id"] for split in SPLITS for pair in pairs[split]]
    assert len(written) == len(set(written)) == notes["kept"] == report["pairs"]
    assert set(written) <= {note.note_id for note in raw}
    # every synthetic note has its BHC (with its TRANSITIONAL ISSUES unless the patient died) and passes the rules
    assert report["pairs"] == len(raw) and report["bhc_headings"] == {"Brief Hospital Course": len(raw)}
    by_id = {note.note_id: note.text for note in raw}
    for pair in pairs["test"] + pairs["validation"]:
        text = by_id[pair["note_id"]]
        assert "Brief Hospital Course:" not in pair["source"] and "Medications on Admission:" in pair["source"]
        assert "Medications on Admission" not in pair["target"] and "Discharge Instructions" not in pair["target"]
        assert pair["target"].split() == text[text.index("Brief Hospital Course:") + 22:
                                              text.index("Medications on Admission:")].split()
    # the summary table: counts and the four budgets, per split
    assert f"{len(raw):,} notes read, {len(raw):,} pairs kept" in stdout
    assert all(f"fit {budget}" in stdout for budget in (512, 2048, 4096, 8192))
    fits = report["lengths"]["source_fits"]
    assert [fits[str(b)]["count"] for b in (512, 2048, 4096, 8192)] == sorted(
        fits[str(b)]["count"] for b in (512, 2048, 4096, 8192))
    assert fits["8192"]["count"] == sum(report["splits"][s]["lengths"]["source_fits"]["8192"]["count"] for s in SPLITS)


def test_end_to_end_splits_by_patient(synth, built, tmp_path):
    out, _, _ = built
    subjects = {split: {pair["subject_id"] for pair in read_pairs(out, split)} for split in SPLITS}
    assert not (subjects["train"] & subjects["validation"] or subjects["train"] & subjects["test"]
                or subjects["validation"] & subjects["test"])
    rows = list(csv.DictReader(open(out / "split.csv", encoding="utf-8")))
    named = {"train": "train", "val": "validation", "test": "test"}
    assert {int(r["subject_id"]): named[r["split"]] for r in rows} == {
        subject: split for split, members in subjects.items() for subject in members}
    patients = sum(len(members) for members in subjects.values())
    assert len(subjects["test"]) == len(subjects["validation"]) == round(0.1 * patients)
    held_out = [int(line) for line in (out / "exclude_subjects.txt").read_text().split()]
    assert sorted(held_out) == sorted(subjects["validation"] | subjects["test"])

    # --split-from: listed patients keep their split (another task's file says "val"), unlisted ones go to train
    train = sorted(subjects["train"])
    forced = {train[0]: "test", train[1]: "val"}
    split_file = tmp_path / "icd_split.csv"
    split_file.write_text("subject_id,split\n" + "".join(f"{s},{v}\n" for s, v in forced.items()))
    report = prepare_bhc_dataset(synth, tmp_path / "fixed", split_from=[split_file], verbose=False)
    fixed = {split: {pair["subject_id"] for pair in read_pairs(tmp_path / "fixed", split)} for split in SPLITS}
    assert fixed["test"] == {train[0]} and fixed["validation"] == {train[1]}
    assert report["split_from_unlisted_patients_to_train"] == patients - 2
    assert report["inputs"]["split_from"] == [str(split_file)]


def test_no_note_text_in_output_or_report(synth, built):
    out, stdout, stderr = built
    report_text = (out / "report.json").read_text()
    # distinctive lines of the notes (template headings such as "Chief Complaint:" are not patient text)
    lines = {line.strip() for note in read_mimic_notes(synth / "note" / "discharge.csv.gz")
             for line in note.text.split("\n") if len(line.strip()) >= 30}
    assert lines
    for shown in (stdout, stderr, report_text):
        assert not any(line in shown for line in lines)


def test_truncated_gzip_and_malformed_input_via_the_cli(synth, tmp_path, capsys):
    mimic = tmp_path / "mimic"
    data = (synth / "note" / "discharge.csv.gz").read_bytes()
    (mimic / "note").mkdir(parents=True)
    (mimic / "note" / "discharge.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit) as exit_info:
        cmbert.cli.main(["bhc", "prepare", "--mimic", str(mimic), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "truncated gzip" in error and "discharge.csv.gz" in error
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()

    with pytest.raises(SystemExit):  # a file that is not a notes table: a one-line error, not a traceback
        cmbert.cli.main(["bhc", "prepare", "--mimic", str(synth / "hosp" / "patients.csv.gz"), "--out",
                     str(tmp_path / "out")])
    assert "missing column(s) note_id" in capsys.readouterr().err


def test_before_variant_keeps_the_patients_and_drops_the_later_sections(synth, built, tmp_path):
    out, _, _ = built
    again = tmp_path / "again"
    cmbert.cli.main(["bhc", "prepare", "--mimic", str(synth / "note" / "discharge.csv.gz"), "--out", str(again),
                 "--source-sections", "before"])
    report = json.loads((again / "report.json").read_text())
    assert report["settings"]["source_sections"] == "before"
    assert (again / "split.csv").read_bytes() == (out / "split.csv").read_bytes()
    for pair in read_pairs(again, "test"):
        assert "Discharge Instructions:" not in pair["source"] and "Medications on Admission:" not in pair["source"]
