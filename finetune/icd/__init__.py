"""ICD coding (Edin et al.'s MIMIC-IV protocol): dataset builder, models, training, metrics, inference."""

from finetune.icd.predict import predict  # `finetune.icd.predict(model_dir, notes)`: the Python inference API

__all__ = ["predict"]
