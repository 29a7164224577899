"""A folder of 2-D slice images (PNG, TIFF, JPEG 2000, JPEG) as a slice source.

Such images carry no Hounsfield units: their values are taken as intensities
already windowed to [0, 1] (8-bit / 255, 16-bit / 65535). Patients come from
the layout so patient-level splits still work: an image inside a top-level
subfolder belongs to the patient named like that subfolder, an image directly
in the root is a patient of its own. There are no masks.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image

from .dicom_series import SeriesProblem

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jp2", ".j2k", ".jpg", ".jpeg")
GROUP_SIZE = 256  # images per task: bounds the memory of one worker result
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601
SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(bool): 1.0}


@dataclass(frozen=True)
class ImageGroup:
    """Images of one folder processed together (one task of the ingest pool)."""

    root: str
    folder: str  # relative to root
    files: tuple[str, ...]
    patients: tuple[str, ...]  # one per file
    shape: tuple[int, int] | None  # the folder's majority (rows, cols), None if no header was readable


def is_slice_image(path: str | Path) -> bool:
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def group_slice_images(root: Path, files: Iterable[Path]) -> tuple[list[ImageGroup], list[SeriesProblem]]:
    """Group the image files under `root` by folder, leaving out odd-sized ones.

    Sizes come from the file headers; an image whose size differs from the
    majority of its folder is most likely not a slice of the same series and
    is skipped with a problem.
    """
    by_folder: dict[str, list[str]] = defaultdict(list)
    for path in sorted(str(f) for f in files if is_slice_image(f)):
        by_folder[os.path.dirname(path)].append(path)
    groups, problems = [], []
    for folder, paths in sorted(by_folder.items()):
        sizes = {path: _header_shape(path) for path in paths}
        known = Counter(s for s in sizes.values() if s is not None)
        majority = known.most_common(1)[0][0] if known else None
        keep = []
        for path in paths:
            if sizes[path] is not None and sizes[path] != majority:
                problems.append(SeriesProblem(os.path.relpath(path, root), _odd_size(sizes[path], majority)))
            else:
                keep.append(path)
        for start in range(0, len(keep), GROUP_SIZE):
            chunk = tuple(keep[start : start + GROUP_SIZE])
            groups.append(ImageGroup(str(root), os.path.relpath(folder, root), chunk,
                                     tuple(_patient(root, p) for p in chunk), majority))
    return groups, problems


def load_group(group: ImageGroup) -> tuple[np.ndarray, list[int], list[SeriesProblem]]:
    """Decode a group: an (n, rows, cols) float32 stack in [0, 1], the indices
    into `group.files` it holds, and the problems of the files left out."""
    images, kept, problems, converted = [], [], [], []
    shape = group.shape
    for i, path in enumerate(group.files):
        subject = os.path.relpath(path, group.root)
        try:
            image, was_rgb = read_slice_image(path)
        except Exception as exc:  # decoders raise many types
            problems.append(SeriesProblem(subject, f"unreadable image: {exc}"))
            continue
        shape = shape or image.shape
        if image.shape != shape:
            problems.append(SeriesProblem(subject, _odd_size(image.shape, shape)))
            continue
        if was_rgb:
            converted.append(subject)
        images.append(image)
        kept.append(i)
    if converted:
        names = ", ".join(converted[:3]) + (f" and {len(converted) - 3} more" if len(converted) > 3 else "")
        reason = f"{len(converted)} colour image(s) converted to luminance: {names}"
        problems.append(SeriesProblem(group.folder, reason))
    stack = np.stack(images) if images else np.zeros((0, *(shape or (0, 0))), dtype=np.float32)
    return stack, kept, problems


def read_slice_image(path: str | Path) -> tuple[np.ndarray, bool]:
    """One image as float32 intensities in [0, 1], and whether it was colour.

    Colour (RGB/RGBA) becomes BT.601 luminance; a grey+alpha image keeps its
    grey channel. Only 8- and 16-bit (and 1-bit) samples are accepted.
    """
    pixels = imagecodecs.imread(str(path))
    scale = SCALES.get(pixels.dtype)
    if scale is None:
        raise ValueError(f"unsupported pixel type {pixels.dtype}; expected 8- or 16-bit grayscale")
    colour = pixels.ndim == 3 and pixels.shape[-1] in (3, 4)
    if colour:
        image = pixels[..., :3].astype(np.float32) @ LUMA
    elif pixels.ndim == 3 and pixels.shape[-1] == 2:
        image = pixels[..., 0].astype(np.float32)
    elif pixels.ndim == 2:
        image = pixels.astype(np.float32)
    else:
        raise ValueError(f"not a 2-D image (array shape {pixels.shape})")
    return image / np.float32(scale), colour


def _header_shape(path: str) -> tuple[int, int] | None:
    """(rows, cols) from the header without decoding, or None if PIL cannot tell."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # PIL raises many types; decoding later decides
        return None
    return height, width


def _patient(root: Path, path: str) -> str:
    parts = Path(os.path.relpath(path, root)).parts
    return parts[0] if len(parts) > 1 else Path(path).stem


def _odd_size(shape, majority) -> str:
    return f"size {_size_text(shape)} differs from the folder's majority {_size_text(majority)}; skipped"


def _size_text(shape) -> str:
    return "unknown" if shape is None else f"{shape[1]}x{shape[0]}"
