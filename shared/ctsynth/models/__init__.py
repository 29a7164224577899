"""Generative model families: configs, networks, one training step, sampling.

Each family is one module registered in `ctsynth.models.registry.FAMILIES`;
they share the `Family` interface in `base.py`, so the training runtime,
the sampling service and the evaluation service treat them alike.
"""
