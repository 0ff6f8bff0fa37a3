"""`cmbert finetune classify train`, `cmbert finetune tokens train`: both run finetune/generic/train.py. A literal
table that `cmbert.cli` reads without importing this package (the format is in its docstring)."""

GROUPS = {
    ("finetune", "classify"): "sequence classification (single- or multi-label) of your own labelled texts",
    ("finetune", "tokens"): "token classification (NER) with IOB2 tags on your own labelled words",
}

COMMANDS = {
    ("finetune", "classify", "train"): {
        "config": "cmbert.finetune.generic.config:load_generic_config",
        "bind": {"task": "classify"},
        "run": "cmbert.finetune.generic.train:main",
        "show": "cmbert.finetune.generic.train:format_summary",
        "example": "cmbert finetune classify train --config configs/finetune/classify/demo.yaml "
                   "data.train=train.csv data.validation=val.csv data.test=test.csv model.init_from=runs/demo/model",
        "help": "sequence classification (single- or multi-label) of your own labelled texts, from CSV / JSONL files "
                "or a local `datasets` folder, with optional LoRA and layer pruning; writes a stock transformers "
                "model, report.json and predictions",
    },
    ("finetune", "tokens", "train"): {
        "config": "cmbert.finetune.generic.config:load_generic_config",
        "bind": {"task": "tokens"},
        "run": "cmbert.finetune.generic.train:main",
        "show": "cmbert.finetune.generic.train:format_summary",
        "example": "cmbert finetune tokens train --config configs/finetune/tokens/demo.yaml "
                   "data.train=runs/ner-dataset model.init_from=runs/demo/model model.lora.enabled=true",
        "help": "token classification (NER) with IOB2 tags on your own labelled words, from CSV / JSONL files or a "
                "local `datasets` folder, with optional LoRA and layer pruning; writes a stock transformers model, "
                "report.json and predictions",
    },
}
