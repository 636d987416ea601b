"""Inference-side models and policies. Imports nothing from the other packages."""
