"""ICD coding (Edin et al.'s MIMIC-IV protocol): dataset builder, models, training, metrics, inference."""

from cmbert.finetune.icd.predict import predict

__all__ = ["predict"]
