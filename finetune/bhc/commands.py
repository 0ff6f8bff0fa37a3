"""`cmbert bhc prepare | summarize | evaluate`. A literal table that `cmbert.cli` reads without importing this package
(the format is in its docstring); each command's settings are a typed config (`cmbert.finetune.bhc.config`)."""

GROUPS = {("bhc",): "Brief Hospital Course summarisation benchmark from discharge summaries"}

COMMANDS = {
    ("bhc", "prepare"): {
        "config": "cmbert.finetune.bhc.config:load_prepare_config",
        "fields": "cmbert.finetune.bhc.config:BhcPrepareConfig",
        "preset": "configs/bhc/prepare.yaml",
        "run": "cmbert.finetune.bhc.prepare:prepare_from_config",
        "show": "cmbert.finetune.bhc.prepare:format_prepared",
        "record": True,
        "help": "split each discharge summary into source (the note without its Brief Hospital Course) and target "
                "(the BHC section), clean and count skips by reason, split by patient, and report lengths and how "
                "many sources fit 512 / 2k / 4k / 8k tokens",
    },
    ("bhc", "summarize"): {
        "config": "cmbert.finetune.bhc.config:load_summarize_config",
        "fields": "cmbert.finetune.bhc.config:BhcSummarizeConfig",
        "preset": "configs/bhc/summarize.yaml",
        "run": "cmbert.finetune.bhc.summarize:summarize_from_config",
        "show": "cmbert.finetune.bhc.summarize:format_run",
        "record": True,
        "help": "extractive BHC summaries of a prepared dataset: lead-k, the greedy ROUGE oracle, LexRank centrality "
                "on the encoder's sentence embeddings, or a sentence scorer trained on train-split ROUGE labels; a "
                "per-note word budget",
    },
    ("bhc", "evaluate"): {
        "config": "cmbert.finetune.bhc.config:load_evaluate_config",
        "fields": "cmbert.finetune.bhc.config:BhcEvaluateConfig",
        "preset": "configs/bhc/evaluate.yaml",
        "run": "cmbert.finetune.bhc.evaluate:evaluate_from_config",
        "show": "cmbert.finetune.bhc.evaluate:format_evaluation",
        "record": True,
        "help": "score summary runs on a split: ROUGE-1/2/L/Lsum F with bootstrap intervals, BERTScore with a local "
                "encoder, lengths; lead-k and oracle baselines beside them",
    },
}
