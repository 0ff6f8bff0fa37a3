"""The ModernBERT encoder: transformers-exact weights, computed on unpadded tokens."""

from cmbert.modeling.attention import attention_backend, set_attention_backend
from cmbert.modeling.checkpoint import set_special_token_ids
from cmbert.modeling.model import (
    ModernBertForMaskedLM,
    ModernBertForQuestionAnswering,
    ModernBertForSequenceClassification,
    ModernBertForTokenClassification,
    ModernBertModel,
    ModernBertPreTrainedModel,
    enable_checkpointing,
)

__all__ = [
    "ModernBertForMaskedLM",
    "ModernBertForQuestionAnswering",
    "ModernBertForSequenceClassification",
    "ModernBertForTokenClassification",
    "ModernBertModel",
    "ModernBertPreTrainedModel",
    "attention_backend",
    "enable_checkpointing",
    "set_attention_backend",
    "set_special_token_ids",
]
