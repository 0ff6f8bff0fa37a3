"""The entry points' commands (`cmbert demo`, `cmbert embed`) and the nouns several packages share. A literal table,
read by `cmbert.cli` without importing anything (the table format is in its docstring)."""

GROUPS = {
    ("finetune",): "fine-tune the encoder on clinical tasks",
    ("predict",): "run a fine-tuned model on new notes",
}

COMMANDS = {
    ("demo",): {
        "run": "cmbert.demo:run_demo",
        "flags": {"out_dir": "out"},
        "help": "the whole job on CPU: synthetic MIMIC + PubMed + ontologies -> tokenizer -> shards -> DeepSpeed "
                "pretraining -> transformers export -> fill-mask",
    },
    ("embed",): {
        "config": "cmbert.embed:load_embed_config",
        "fields": "cmbert.embed:EmbedConfig",
        "preset": "configs/embed.yaml",
        "run": "cmbert.embed:embed_from_config",
        "show": "cmbert.embed:format_summary",
        "stderr": True,
        "record": True,
        "help": "pooled note embeddings from an encoder folder (ours, any ModernBERT, or another transformers encoder "
                "such as BERT / E5 / BGE), batched and cached on disk",
    },
}
