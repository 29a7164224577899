"""Generative model families: configs, networks, one training step, sampling.

Each family is one module registered in `ctsynth.models.families` (`get_family`);
they share the `Family` interface in `base.py`, so the training runtime,
the sampling service and the evaluation service treat them alike.

Beside the families: `checkpoint` (save, resume, verified load), `ema`, `distributed` and `config_checks` serve any
family; `gan_family`, `gan_networks`, `gan_losses`, `augment` (ADA) and
`stylegan2_networks` are GAN parts; `denoising_diffusion` is the core of
`ddpm3d` and `ldm`, which import no GAN module (tests/models/test_module_layout.py).
"""
