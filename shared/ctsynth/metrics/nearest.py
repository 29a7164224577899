"""Nearest neighbours by L2 distance, for MS-SSIM pairing (seed 001) and
memorization: on flattened images or on feature vectors alike."""

from __future__ import annotations

import numpy as np
import torch

CANDIDATES = 8  # nearest by the fast expanded form, re-ranked by exact distance


def nearest(queries: np.ndarray, references: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the L2 distance to its nearest reference and that
    reference's index, on flattened items or feature vectors.

    The matrix-product form of the distance (|q|² + |r|² - 2 q·r) is fast but
    loses float32 precision to cancellation, so an exact copy would come out
    at ~1e-3 instead of 0; it only shortlists candidates, whose distances are
    then computed directly as |q - r|."""
    refs = torch.from_numpy(np.ascontiguousarray(references.reshape(len(references), -1), dtype=np.float32))
    flat = queries.reshape(len(queries), -1)
    k = min(CANDIDATES, len(refs))
    distances, indices = [], []
    for start in range(0, len(flat), chunk):
        batch = torch.from_numpy(np.ascontiguousarray(flat[start:start + chunk], dtype=np.float32))
        shortlist = torch.cdist(batch, refs).topk(k, dim=1, largest=False).indices  # (B, k)
        exact = torch.stack([(batch - refs[shortlist[:, j]]).norm(dim=1) for j in range(k)], dim=1)  # (B, k)
        best = exact.min(dim=1)
        distances.append(best.values)
        indices.append(shortlist.gather(1, best.indices[:, None])[:, 0])
    return torch.cat(distances).numpy(), torch.cat(indices).numpy()
