"""The report's pictures as PNG bytes: sample grids (seed 004 compares 16
generated with 16 real samples), the closest memorization pairs, training
curves and plots. Matplotlib's object API (no pyplot state), so figures can
be drawn from job threads.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure

from ctsynth.metrics.memorization import Memorization
from ctsynth.metrics.utility import ARMS, UtilityResult
from ctsynth.training.grid import GRID, png_bytes, tile


def views(item: np.ndarray) -> list[np.ndarray]:
    """A 2D item's image, or a volume's central axial, coronal and sagittal slices."""
    plane = item[0]
    if plane.ndim == 2:
        return [plane]
    depth, height, width = plane.shape
    return [plane[depth // 2], plane[:, height // 2], plane[:, :, width // 2]]


def grid_png(images: np.ndarray) -> bytes:
    """16 images in a 4x4 grid; or 4 volumes, one row of three planes each."""
    count = GRID * GRID if images.ndim == 4 else GRID
    tiles = [view for item in images[:count] for view in views(item)]
    return png_bytes(tile(np.stack(tiles), columns=GRID if images.ndim == 4 else 3))


def pairs_png(synthetic: np.ndarray, train: np.ndarray, pairs: list[tuple[int, int, float]]) -> bytes:
    """One row per pair: the synthetic sample, then its nearest training sample."""
    tiles = [views(items[index])[0] for s, t, _ in pairs for items, index in ((synthetic, s), (train, t))]
    return png_bytes(tile(np.stack(tiles), columns=2))


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def curves_png(history: list[dict[str, float]]) -> bytes | None:
    """Every logged loss against the step (a model's metrics.json)."""
    keys = sorted({k for row in history for k, v in row.items()
                   if k not in ("step", "images_per_s") and isinstance(v, (int, float))})
    if not history or not keys:
        return None
    figure = Figure(figsize=(7, 3.5))
    axes = figure.subplots()
    for key in keys:
        rows = [row for row in history if key in row]
        axes.plot([row["step"] for row in rows], [row[key] for row in rows], marker=".", label=key)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.legend(fontsize=8)
    axes.set_title("training curves")
    return _png(figure)


def distances_png(result: Memorization) -> bytes:
    """Nearest-training-sample distances of synthetic and held-out real samples."""
    figure = Figure(figsize=(7, 3.5))
    axes = figure.subplots()
    bins = np.histogram_bin_edges(np.concatenate([result.synthetic_distances, result.heldout_distances]), bins=30)
    axes.hist(result.heldout_distances, bins=bins, alpha=0.6, label="held-out real")
    axes.hist(result.synthetic_distances, bins=bins, alpha=0.6, label="synthetic")
    axes.axvline(result.threshold, color="black", linestyle="--", label="1st percentile of held-out")
    axes.set_xlabel("L2 distance to the nearest training sample (pixels)")
    axes.legend(fontsize=8)
    axes.set_title("memorization")
    return _png(figure)


def utility_png(result: UtilityResult) -> bytes:
    """Test accuracy of each classifier per repeat."""
    figure = Figure(figsize=(6, 3.5))
    axes = figure.subplots()
    for position, arm in enumerate(ARMS):
        values = result.accuracy[arm]
        axes.scatter(np.full(len(values), position), values, alpha=0.7)
        axes.hlines(np.mean(values), position - 0.25, position + 0.25, color="black")
    axes.set_xticks(range(len(ARMS)), ["real", "real + synthetic", "synthetic, fine-tuned"])
    axes.set_ylabel("test accuracy")
    axes.set_title(f"utility (p: augmentation {result.p_augmentation:.3g}, extraction {result.p_extraction:.3g})")
    return _png(figure)


def contours_png(images: np.ndarray, masks: np.ndarray, columns: int = 4) -> bytes:
    """"Nodules where asked": each generated image (N, H, W) in [0, 1] with
    the contour of the mask it was asked for (N, H, W) drawn over it."""
    rows = -(-len(images) // columns)
    figure = Figure(figsize=(2.2 * columns, 2.2 * rows))
    for index, (image, mask) in enumerate(zip(images, masks)):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if mask.any():
            axes.contour(mask.astype(float), levels=[0.5], colors="red", linewidths=1.0)
        axes.set_axis_off()
    figure.suptitle("nodules where asked: the requested mask's contour (red) over the generated image")
    return _png(figure)
