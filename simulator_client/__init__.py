"""Simulated users: datasets, user response models, environments, HTTP replay, metrics."""
