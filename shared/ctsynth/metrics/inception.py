"""InceptionV3 features through torch-fidelity's `inception-v3-compat`, the
network of FID, KID and PR in seeds 000 (§4.3, fid50k/pr50k), 002 and 004.

The weights cannot be downloaded here or on air-gapped clusters, so they
are configuration (a path or object-store URI). Grayscale CT in [0, 1] is
fed the way the seeds' tools did: scaled to uint8 and replicated to three
channels; torch-fidelity resizes to 299² itself (TF1-compatible bilinear).

torch-fidelity reads the weights with `torch.load(weights_only=False)`, which
could run code in a hostile pickle. So the file is read once into memory,
loaded from that copy with `weights_only=True`, and torch-fidelity is handed
only a re-serialisation of the tensors that load produced: it never opens
the file, and what was checked is what it loads.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from ctsynth.errors import FailedPrecondition
from ctsynth.metrics.weights import read_copy

EXTRACTOR = "inception-v3-compat"
LAYER = "2048"  # pool3, the FID/KID/PR layer
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
HOW_TO = (f"FID, KID and PR need InceptionV3 weights, which cannot be downloaded here: fetch {URL_INCEPTION_V3} "
          f"(torch-fidelity's {WEIGHTS_FILE}) on a machine with internet access, then pass its path or an "
          "object-store URI with `ctsynth evaluate --inception-weights`, the request field inception_weights, "
          "or CTSYNTH_INCEPTION_WEIGHTS on the evaluation service")


def to_uint8_rgb(images: np.ndarray) -> torch.Tensor:
    """(N, 1, H, W) in [0, 1] -> (N, 3, H, W) uint8, as the seeds' PNGs were read."""
    plane = np.rint(np.clip(images[:, :1], 0, 1) * 255).astype(np.uint8)
    return torch.from_numpy(np.repeat(plane, 3, axis=1))


class _RGBImages(Dataset):
    """Float images served as torch-fidelity's uint8 RGB tensors, one at a time."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return to_uint8_rgb(self.images[i:i + 1])[0]


def tensors_only(data: bytes, name: Path) -> io.BytesIO:
    """The state dict in `data`, loaded with weights_only=True and saved
    again as a plain dict of tensors; refused when it is anything else."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same answer
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise FailedPrecondition(f"{name} is not a weights-only PyTorch file ({type(exc).__name__}: {reason}). "
                                 f"{HOW_TO}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FailedPrecondition(f"{name} is not a state dict of tensors. {HOW_TO}")
    checked = io.BytesIO()
    torch.save(dict(state), checked)
    checked.seek(0)
    return checked


class InceptionFeatures:
    """The 2048-d pool features of InceptionV3 for 2D images."""

    name = "inception"

    def __init__(self, weights: Path, device: torch.device, batch_size: int = 32):
        data, sha256 = read_copy(weights)
        checked = tensors_only(data, weights)
        self.id = f"{EXTRACTOR}-{sha256[:16]}"
        self.cuda = device.type == "cuda"
        self.batch_size = batch_size
        try:  # torch-fidelity's torch.load accepts a file object as the "path"
            self._extractor = create_feature_extractor(EXTRACTOR, [LAYER], cuda=self.cuda,
                                                       feature_extractor_weights_path=checked, verbose=False)
        except RuntimeError as exc:  # load_state_dict: missing, unexpected or misshapen tensors
            raise FailedPrecondition(f"{weights} does not hold InceptionV3 weights in torch-fidelity's layout "
                                     f"({str(exc).splitlines()[0]}). {HOW_TO}") from None

    def features(self, images: np.ndarray) -> np.ndarray:
        features = get_featuresdict_from_dataset(_RGBImages(images), self._extractor, self.batch_size, self.cuda,
                                                 save_cpu_ram=True, verbose=False)
        return features[LAYER].numpy()
