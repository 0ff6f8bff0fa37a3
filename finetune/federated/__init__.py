"""Frozen-embedding ICD heads trained centrally and federated with Flower (`cmbert finetune federated train`)."""
