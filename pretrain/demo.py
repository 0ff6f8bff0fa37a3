"""`make demo` / `cmbert demo`: the whole path from text to a stock transformers folder, in under a minute on CPU.

Steps: synthetic discharge-summary text -> byte-level BPE tokenizer -> tiny ModernBERT -> a short MLM loop ->
`save_pretrained` (model + tokenizer) -> `transformers.pipeline("fill-mask")` on the exported folder, loaded by plain
transformers with no remote code. Until `cmbert pretrain` exists this is the project's main job; it writes
`<out>/model/` and `<out>/demo_report.json`.

The text is written for this file (templates with slots, expanded by a seeded RNG): it is not MIMIC or PubMed text.
De-identified spans are `___`, as in MIMIC-IV-Note.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import time
from pathlib import Path

import torch
import transformers
from transformers import ModernBertConfig

from modeling import ModernBertForMaskedLM, set_special_token_ids
from pretrain.tokenizer import SPECIAL_TOKENS, padded_vocab_size, save_tokenizer, train_tokenizer

# One template per sentence; {slots} are filled per document so that every document tells one consistent story.
TEMPLATES = (
    "___ is a {age} year old {sex} with a history of {history} who presents with {complaint}.",
    "The patient was admitted with {complaint}.",
    "{He} was admitted to the {unit} for further management of {complaint}.",
    "{He} reports {complaint} that started {onset} ago and is worse with exertion.",
    "{He} denies fever, chills, nausea or vomiting.",
    "{He} denies {complaint} at rest.",
    "On arrival to the emergency department vital signs were notable for a heart rate of {hr} and blood pressure of {sbp}/{dbp}.",
    "Initial labs were notable for a white count of {wbc} and a creatinine of {cr}.",
    "Troponin was {trop} and the ECG showed {ecg}.",
    "Chest x-ray showed {cxr}.",
    "CT of the abdomen and pelvis showed {ct}.",
    "{He} was started on {drug} {dose} mg {route} {freq} for {indication}.",
    "{drug} was held in the setting of {reason}.",
    "{drug} was restarted prior to discharge.",
    "{He} received {fluid} liters of normal saline with improvement in {his} blood pressure.",
    "Blood cultures were {culture} and {he} was treated with {antibiotic} for a total of {days} days.",
    "Cardiology was consulted and recommended {cardio_plan}.",
    "{His} {complaint} resolved with {treatment}.",
    "{His} home medications were continued except for {drug}.",
    "# {problem}: {problem_course}",
    "The patient tolerated a regular diet and ambulated independently.",
    "Physical therapy evaluated {him} and recommended discharge {dispo}.",
    "{He} was discharged {dispo} in stable condition.",
    "Discharge condition: mental status clear and coherent, level of consciousness alert and interactive, activity status ambulatory and independent.",
    "Please follow up with your primary care physician Dr. ___ within {followup} days.",
    "Please take all of your medications as prescribed.",
    "Please return to the emergency department if you experience {warning}.",
    "You were admitted to the hospital because of {complaint}.",
    "While you were here we treated you with {treatment}.",
    "Aspirin 81 mg PO daily.",
    "{drug} {dose} mg {route} {freq}.",
    "Atorvastatin 40 mg PO at bedtime.",
    "Past medical history is significant for {history} and {history2}.",
    "Social history: lives with {family} in ___, quit smoking {onset} ago, no alcohol use.",
    "Family history of {family_history} in {his} father.",
    "Exam on admission was notable for {exam}.",
    "Exam on discharge showed clear lungs and no lower extremity edema.",
    "An echocardiogram showed an ejection fraction of {ef} percent.",
    "{He} remained hemodynamically stable throughout the admission.",
    "The remainder of the hospital course was uneventful.",
)

SLOTS = {
    "age": [str(a) for a in range(45, 90)],
    "complaint": ["chest pain"] * 6 + ["chest tightness", "shortness of breath", "abdominal pain", "fever",
                                       "dizziness", "leg swelling", "productive cough", "back pain"],
    "history": ["hypertension", "diabetes mellitus", "coronary artery disease", "atrial fibrillation",
                "heart failure", "chronic kidney disease", "hyperlipidemia", "COPD"],
    "unit": ["medicine service", "cardiology service", "intensive care unit", "step down unit"],
    "onset": ["two days", "three days", "one week", "several hours", "one month"],
    "hr": [str(h) for h in range(58, 131, 3)],
    "sbp": [str(s) for s in range(92, 181, 4)],
    "dbp": [str(d) for d in range(50, 101, 5)],
    "wbc": ["7.2", "9.8", "12.4", "15.1", "6.5"],
    "cr": ["0.9", "1.1", "1.4", "2.3", "1.0"],
    "trop": ["negative", "less than 0.01", "0.04", "elevated at 0.12"],
    "ecg": ["sinus rhythm without ischemic changes", "atrial fibrillation with rapid ventricular response",
            "ST depressions in the lateral leads", "normal sinus rhythm"],
    "cxr": ["no acute cardiopulmonary process", "a right lower lobe consolidation", "mild pulmonary edema",
            "small bilateral pleural effusions"],
    "ct": ["no acute process", "acute uncomplicated diverticulitis", "a small bowel obstruction",
           "cholelithiasis without cholecystitis"],
    "drug": ["Metoprolol", "Lisinopril", "Furosemide", "Apixaban", "Metformin", "Heparin", "Amlodipine"],
    "dose": ["5", "10", "20", "25", "40", "50"],
    "route": ["PO"] * 5 + ["IV"],
    "freq": ["daily", "twice daily", "every eight hours", "at bedtime"],
    "indication": ["rate control", "blood pressure control", "volume overload", "anticoagulation"],
    "reason": ["acute kidney injury", "hypotension", "a planned procedure", "gastrointestinal bleeding"],
    "fluid": ["one", "two", "three"],
    "culture": ["negative", "positive for E. coli", "no growth to date"],
    "antibiotic": ["ceftriaxone", "vancomycin", "piperacillin tazobactam", "levofloxacin"],
    "days": ["five", "seven", "ten", "fourteen"],
    "cardio_plan": ["medical management", "a stress test as an outpatient", "cardiac catheterization",
                    "uptitration of beta blocker"],
    "treatment": ["nitroglycerin", "intravenous diuresis", "antibiotics", "pain control", "intravenous fluids"],
    "problem": ["Chest pain", "Hypertension", "Acute kidney injury", "Atrial fibrillation", "Pneumonia"],
    "problem_course": ["ruled out for myocardial infarction with serial troponins.",
                       "home regimen continued with good control.",
                       "resolved with intravenous fluids, creatinine back to baseline.",
                       "rate controlled on metoprolol, continued on apixaban.",
                       "treated with antibiotics with clinical improvement."],
    "dispo": ["home", "home with services", "to a rehabilitation facility"],
    "followup": ["three", "seven", "fourteen"],
    "warning": ["chest pain, shortness of breath or fainting", "fever greater than 101",
                "worsening abdominal pain", "bleeding or black stools"],
    "family": ["his wife", "her husband", "her daughter", "his son"],
    "family_history": ["coronary artery disease", "colon cancer", "diabetes", "stroke"],
    "exam": ["crackles at the lung bases", "an irregularly irregular rhythm", "a soft nontender abdomen",
             "bilateral lower extremity edema"],
    "ef": ["35", "45", "55", "60", "65"],
}
SLOTS["history2"] = SLOTS["history"]
PRONOUNS = {"man": ("He", "he", "His", "his", "him"), "woman": ("She", "she", "Her", "her", "her")}

PROMPTS = (
    "The patient was admitted with chest [MASK].",
    "She was discharged home in stable [MASK].",
    "Aspirin 81 mg [MASK] daily.",
)


def synthetic_notes(n_docs: int, seed: int) -> list[str]:
    """`n_docs` short discharge-summary-like documents: each fills one set of slots and uses 4-9 templates."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sex = rng.choice(("man", "woman"))
        He, he, His, his, him = PRONOUNS[sex]
        slots = {k: rng.choice(v) for k, v in SLOTS.items()}
        slots.update(sex=sex, He=He, he=he, His=His, his=his, him=him)
        chosen = sorted(rng.sample(range(len(TEMPLATES)), rng.randint(4, 9)))
        docs.append(" ".join(TEMPLATES[i].format(**slots) for i in chosen))
    return docs


def mask_tokens(input_ids: torch.Tensor, special: torch.Tensor, mask_id: int, first_normal_id: int, vocab: int,
                generator: torch.Generator, probability: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick `probability` of the non-special tokens; of those 80 % become [MASK], 10 % a random
    ordinary token, 10 % stay. Returns (inputs, labels) with labels -100 where nothing is predicted."""
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & ~special
    labels = torch.where(chosen, input_ids, -100)
    roll = torch.rand(input_ids.shape, generator=generator)
    inputs = torch.where(chosen & (roll < 0.8), mask_id, input_ids)
    random_ids = torch.randint(first_normal_id, vocab, input_ids.shape, generator=generator)
    inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, labels


def _batches(encoded: dict, batch_size: int, rng: random.Random):
    """Endless shuffled batches of whole documents (right-padded; the model unpads them itself)."""
    order = list(range(len(encoded["input_ids"])))
    while True:
        rng.shuffle(order)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield order[i : i + batch_size]


def _collate(encoded: dict, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(encoded["input_ids"][r]) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    special = torch.ones(len(rows), width, dtype=torch.bool)  # padding counts as special: never masked
    for k, r in enumerate(rows):
        n = len(encoded["input_ids"][r])
        ids[k, :n] = torch.tensor(encoded["input_ids"][r])
        mask[k, :n] = 1
        special[k, :n] = torch.tensor(encoded["special_tokens_mask"][r], dtype=torch.bool)
    return ids, mask, special


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_demo(out_dir: str | Path, seed: int = 0, steps: int = 300, batch_size: int = 16) -> dict:
    """Train a tokenizer and a tiny ModernBERT on synthetic notes, export them, run fill-mask. Returns the report
    that is also written to `<out_dir>/demo_report.json`."""
    start = time.perf_counter()
    transformers.utils.logging.disable_progress_bar()  # the demo prints its own progress
    out_dir = Path(out_dir)
    export = out_dir / "model"
    export.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    print(f"[1/5] writing synthetic discharge notes (seed {seed})")
    docs = synthetic_notes(1200, seed)
    eval_docs = synthetic_notes(64, seed + 1)
    print(f"      {len(docs)} training documents, {len(eval_docs)} held out, e.g.:\n      {docs[0][:150]}...")

    print("[2/5] training a byte-level BPE tokenizer")
    tokenizer = train_tokenizer(docs, vocab_size=1000, model_max_length=512)
    vocab = padded_vocab_size(len(tokenizer))
    print(f"      {len(tokenizer)} tokens (model vocabulary padded to {vocab}); "
          f"'{PROMPTS[0]}' -> {tokenizer.convert_ids_to_tokens(tokenizer(PROMPTS[0])['input_ids'])}")

    print("[3/5] building a tiny ModernBERT")
    no_ids = dict.fromkeys(("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id"))
    config = ModernBertConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
        global_attn_every_n_layers=3,  # layers 0 and 3 global, 1 and 2 local
        local_attention=16,  # local layers see +-8 tokens: shorter than most documents, so the window matters
        max_position_embeddings=512,
        initializer_range=0.1,  # ModernBERT's 0.02 suits width 768; at width 64 it stalls a 300-step run near 4.5
        **no_ids,
    )
    set_special_token_ids(config, tokenizer)  # ids come from the tokenizer, never ModernBertConfig's defaults
    model = ModernBertForMaskedLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    n_embedding = model.model.embeddings.tok_embeddings.weight.numel()
    print(f"      {n_params:,} parameters ({n_params - n_embedding:,} without the tied embedding), "
          f"layers {list(config.layer_types)}")

    encoded = tokenizer(docs, truncation=True, max_length=256, return_special_tokens_mask=True)
    eval_encoded = tokenizer(eval_docs, truncation=True, max_length=256, return_special_tokens_mask=True)
    masking = dict(mask_id=tokenizer.mask_token_id, first_normal_id=len(SPECIAL_TOKENS), vocab=len(tokenizer))
    # A fixed masked eval set, so the loss before and after training is measured on the same predictions.
    eval_ids, eval_mask, eval_special = _collate(eval_encoded, list(range(len(eval_docs))))
    eval_inputs, eval_labels = mask_tokens(eval_ids, eval_special, generator=torch.Generator().manual_seed(seed),
                                           **masking)

    @torch.no_grad()
    def eval_loss() -> float:
        model.eval()
        loss = model(input_ids=eval_inputs, attention_mask=eval_mask, labels=eval_labels).loss.item()
        model.train()
        return loss

    print(f"[4/5] masked-LM training: {steps} steps, batch {batch_size}, 30% masking (80/10/10), AdamW")
    loss_before = eval_loss()
    print(f"      held-out loss before training: {loss_before:.3f} (uniform guess: {math.log(len(tokenizer)):.3f})")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(steps // 10, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(steps - warmup, 1))))
    generator = torch.Generator().manual_seed(seed)
    batches = _batches(encoded, batch_size, random.Random(seed))
    train_start = time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        ids, mask, special = _collate(encoded, next(batches))
        inputs, labels = mask_tokens(ids, special, generator=generator, **masking)
        loss = model(input_ids=inputs, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step == 1 or step % 100 == 0 or step == steps:
            print(f"      step {step:4d}  train loss {loss.item():.3f}")
    train_seconds = time.perf_counter() - train_start
    loss_after = eval_loss()
    print(f"      held-out loss after training: {loss_after:.3f} ({train_seconds:.1f} s, "
          f"{1000 * train_seconds / steps:.0f} ms/step)")

    print("[5/5] exporting and running transformers' fill-mask pipeline on the export")
    model.save_pretrained(export)
    save_tokenizer(tokenizer, export)  # readable by transformers 4.x too
    print(f"      exported to {export}/ ({', '.join(sorted(p.name for p in export.iterdir()))})")
    fill_mask = transformers.pipeline("fill-mask", model=str(export), device="cpu")  # plain transformers, no remote code
    print(f"      loaded as transformers.{type(fill_mask.model).__name__}")
    predictions = {}
    for prompt in PROMPTS:
        top = fill_mask(prompt, top_k=5)
        predictions[prompt] = [{"token": p["token_str"], "score": round(float(p["score"]), 4)} for p in top]
        shown = ", ".join(f"{p['token_str'].strip()!r} {p['score']:.2f}" for p in top)
        print(f"      {prompt}\n        -> {shown}")

    report = {
        "seed": seed,
        "export": str(export),
        "documents": len(docs),
        "tokenizer_size": len(tokenizer),
        "vocab_size": vocab,
        "parameters": n_params,
        "steps": steps,
        "batch_size": batch_size,
        "eval_loss_before": loss_before,
        "eval_loss_after": loss_after,
        "train_seconds": round(train_seconds, 2),
        "total_seconds": round(time.perf_counter() - start, 2),
        "predictions": predictions,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "git_sha": _git_sha(),
    }
    (out_dir / "demo_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"done in {report['total_seconds']:.1f} s; report: {out_dir / 'demo_report.json'}")
    return report
