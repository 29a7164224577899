"""Model families by name. Modules are imported on first use so that
listing families does not import every network."""

from __future__ import annotations

import importlib

from ctsynth.errors import InvalidArgument
from ctsynth.models.base import Family

_FAMILIES = {
    "gan": "ctsynth.models.gan:VanillaGAN",
    "wgan": "ctsynth.models.wgan:WGAN",
    "dcgan": "ctsynth.models.dcgan:DCGAN",
    "wgan_gp": "ctsynth.models.wgan_gp:WGANGP",
    "unet_gan": "ctsynth.models.unet_gan:UNetGAN",
    "stylegan2": "ctsynth.models.stylegan2:StyleGAN2",
    "vae": "ctsynth.models.vae:VAE",
    "vqvae": "ctsynth.models.vqvae:VQVAE",
    "ldm": "ctsynth.models.ldm:LDM",
    "rflow": "ctsynth.models.rflow:RFlow",
    "ddpm3d": "ctsynth.models.ddpm3d:DDPM3D",
    "controlnet": "ctsynth.models.controlnet:ControlNet",
}


def family_names() -> list[str]:
    return list(_FAMILIES)


def get_family(name: str) -> type[Family]:
    """The Family class for `name`; INVALID_ARGUMENT naming the known ones."""
    if name not in _FAMILIES:
        raise InvalidArgument("family", f"unknown model family {name!r}; known: {', '.join(_FAMILIES)}")
    module_name, class_name = _FAMILIES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
