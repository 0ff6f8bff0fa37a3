"""Robustness audit of note embeddings (LAPD / LDFR, Vijayaraj 2025): `perturb` holds the four perturbation operators
and their lexicons, `audit` runs them on held-out notes and measures latent diagnosis flips (`cmbert audit
robustness`)."""
