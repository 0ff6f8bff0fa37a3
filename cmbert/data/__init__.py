"""Shared data code both halves import: MIMIC-IV and PubMed readers, note inputs, ICD ontologies and code
categories, the open data samples from pinned wheels, and the seeded synthetic MIMIC-IV generator."""
