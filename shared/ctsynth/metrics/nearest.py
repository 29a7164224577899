"""Nearest neighbours by L2 distance, for MS-SSIM pairing (seed 001) and
memorization: on flattened images or on feature vectors alike."""

from __future__ import annotations

import numpy as np
import torch


def nearest(queries: np.ndarray, references: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the L2 distance to its nearest reference and that
    reference's index, on flattened items or feature vectors."""
    refs = torch.from_numpy(np.ascontiguousarray(references.reshape(len(references), -1), dtype=np.float32))
    flat = queries.reshape(len(queries), -1)
    distances, indices = [], []
    for start in range(0, len(flat), chunk):
        batch = torch.from_numpy(np.ascontiguousarray(flat[start:start + chunk], dtype=np.float32))
        best = torch.cdist(batch, refs).min(dim=1)
        distances.append(best.values)
        indices.append(best.indices)
    return torch.cat(distances).numpy(), torch.cat(indices).numpy()
