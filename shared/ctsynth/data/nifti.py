"""NIfTI volumes in millimetres with the DICOM grid's position, for every
NIfTI ctsynth writes (ingest exports and synthetic volumes).

DICOM places voxels in LPS patient coordinates, NIfTI in RAS: the same
axial grid with x and y negated. qform and sform carry the same affine so
that every reader (nibabel, ITK, 3D Slicer) agrees on it.
"""

from __future__ import annotations

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def axial_volume(hu_zyx: np.ndarray, spacing_zyx: tuple[float, float, float],
                 origin_lps: tuple[float, float, float], description: str = ""):
    """An int16 NIfTI image of an axial (z, y, x) HU volume whose first voxel
    centre lies at `origin_lps` (x, y, z in mm, DICOM's ImagePositionPatient)."""
    import nibabel as nib

    dz, dy, dx = spacing_zyx
    x0, y0, z0 = origin_lps
    lps = np.array([[dx, 0, 0, x0], [0, dy, 0, y0], [0, 0, dz, z0], [0, 0, 0, 1]], dtype=float)
    affine = LPS_TO_RAS @ lps
    data = np.clip(np.rint(hu_zyx), -32768, 32767).astype(np.int16).transpose(2, 1, 0)
    volume = nib.Nifti1Image(data, affine)
    volume.set_qform(affine, code="scanner")
    volume.set_sform(affine, code="scanner")
    volume.header.set_xyzt_units(xyz="mm")
    if description:
        volume.header["descrip"] = description[:79].encode()
    return volume
