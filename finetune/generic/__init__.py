"""Generic fine-tuning recipes on the user's own labelled text: sequence classification (single- or multi-label) and
token classification (BIO tagging), from CSV / JSONL files or a local `datasets` folder, exported as stock
transformers models. One config family (config.py), one reader (data.py), one metrics module (metrics.py), one
training loop (train.py) for both tasks."""
