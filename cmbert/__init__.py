"""clinical-modernbert: pretrain and fine-tune a ModernBERT clinical encoder whose checkpoints are stock transformers
`modernbert` folders.

One import namespace, in layers (docs/ARCHITECTURE.md, "Layers"; tests/test_layers.py keeps it true):

    cmbert.modeling   the encoder (HF-exact weights, unpadded compute)         imports nothing of ours
    cmbert.core       shared services: config, runtime, run log, note batching, metrics, the fine-tuning loop
    cmbert.data       readers, ontologies, open data samples, the synthetic MIMIC-IV generator
    cmbert.pretrain   corpus -> tokenizer -> shards -> MLM with DeepSpeed -> export        (a task)
    cmbert.finetune.* one package per recipe (icd, trajectory, federated, generic, qa, bhc, robustness)  (tasks)
    cmbert.cli, cmbert.demo, cmbert.embed   entry points that compose tasks

Tasks import core, data and modeling, never each other.
"""

__version__ = "0.1.0"
