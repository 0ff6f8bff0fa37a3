"""Shared services below every task: config loading and sections, runtime, run log, note batching, multi-label
metrics, atomic dataset builds, frozen-encoder embeddings, LoRA, pruning and the one fine-tuning loop. Imports only
`cmbert.modeling` of ours (docs/ARCHITECTURE.md, "Layers")."""
