"""The diffusion families import no GAN code: the denoising core, `ddpm3d`,
`ldm`, `vae` and `ctsynth.diffusion`, nor any ctsynth module they import in turn."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import ctsynth
from tests.imports import imported_names

ROOT = Path(ctsynth.__file__).resolve().parent.parent  # the folder holding the package
MODELS = ROOT / "ctsynth" / "models"
DIFFUSION = [*(MODELS / f"{name}.py" for name in ("denoising_diffusion", "ddpm3d", "ldm", "vae")),
             *sorted((ROOT / "ctsynth" / "diffusion").glob("*.py"))]
# The GAN families and their parts; `augment` is ADA, which augments what a discriminator sees.
GAN = re.compile(r"ctsynth\.models\.(gan|gan_\w+|dcgan|wgan\w*|stylegan2\w*|unet_gan|augment)")


def _sources(name: str, root: Path) -> list[Path]:
    """The files importing ctsynth module `name` runs: its packages' __init__ and its own."""
    parts = name.split(".")
    if parts[0] != "ctsynth":
        return []
    prefixes = (root.joinpath(*parts[:end]) for end in range(1, len(parts) + 1))
    return [path for prefix in prefixes for path in (prefix / "__init__.py", prefix.with_suffix(".py"))
            if path.is_file()]


def gan_imports(starts: Iterable[Path], root: Path) -> tuple[list[str], set[Path]]:
    """'file:line: module' for every GAN module that `starts`, or a ctsynth module
    they import directly or in turn, imports; and the files read."""
    queue, seen, hits = list(starts), set(), []
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        for line, name in imported_names(path, root / "ctsynth"):
            if GAN.fullmatch(name):
                hits.append(f"{path.relative_to(root)}:{line}: {name}")
            queue += _sources(name, root)
    return sorted(hits), seen


def test_the_scan_follows_imports_to_a_planted_gan_import(tmp_path):
    package = tmp_path / "ctsynth"
    for folder, files in {"": {"__init__.py": ""},
                          "models": {"__init__.py": "", "ldm.py": "from ctsynth.models import ema\n",
                                     "ema.py": "def f():\n    from .gan_family import GANFamily\n"},
                          "diffusion": {"x.py": "import ctsynth.models.stylegan2_networks as n\n"
                                                "from ..models import dcgan, denoising_diffusion\n"}}.items():
        (package / folder).mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (package / folder / name).write_text(text)
    hits, seen = gan_imports([package / "models" / "ldm.py", package / "diffusion" / "x.py"], tmp_path)
    assert hits == ["ctsynth/diffusion/x.py:1: ctsynth.models.stylegan2_networks",
                    "ctsynth/diffusion/x.py:2: ctsynth.models.dcgan",
                    "ctsynth/models/ema.py:2: ctsynth.models.gan_family"]
    assert package / "models" / "ema.py" in seen and package / "__init__.py" in seen


def test_diffusion_families_import_no_gan_module():
    assert all(path.is_file() for path in DIFFUSION)
    hits, seen = gan_imports(DIFFUSION, ROOT)
    assert MODELS / "ema.py" in seen  # the scan reached the EMA the diffusion core shares with StyleGAN2
    assert hits == []
