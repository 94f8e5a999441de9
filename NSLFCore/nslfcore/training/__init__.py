"""Nested three-stage NSLF training: stages, trainer, checkpoints, events."""
