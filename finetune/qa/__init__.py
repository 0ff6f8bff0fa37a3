"""Extractive question answering (SQuAD v1.1 / v2.0, RadQA): `cmbert finetune qa train`, `cmbert predict qa`,
`cmbert data qa`."""
