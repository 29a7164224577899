"""DICOM Segmentation objects for the nodule masks of synthetic CT.

A mask is written as one Segmentation Storage instance (PS3.3 A.51) made by
highdicom: BINARY, one segment "Nodule" (SNOMED CT: category 49755003
"Morphologically abnormal structure", type 27925004 "Nodule"), one frame per
CT slice (empty frames kept, so that every slice of the series has its
frame and a mask with no nodule is still a valid object), in the CT
series' study and Frame of Reference but a series of its own.

Algorithm type: AUTOMATIC. The user *requests* a nodule (the condition of
generation) but draws nothing: the mask is made by the generative model
together with the image, with no person delineating or editing it. MANUAL
(PS3.3 C.8.20.2.3) means a person drew the segment and SEMIAUTOMATIC that a
person steered the algorithm's delineation; neither happened, and naming
the model in the Segment's Algorithm Identification is what tells a reader
where the outline came from.

The source images need only their headers (highdicom reads UIDs, geometry
and patient/study attributes, never Pixel Data), so a segmentation of a
volume streamed in slabs can be made after the last slab from header-only
datasets (`ctsynth.data.ct_image.ct_header`) of every slice.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

import ctsynth

SEGMENT_LABEL = "Nodule"
CONTENT_LABEL = "NODULE"
NOMINAL_THICKNESS_MM = 1.0
# What the segmentation copies from its CT to say it is synthetic (highdicom
# copies only Patient and General Study's identifying attributes).
_SYNTHETIC_MARKS = ("PatientIdentityRemoved", "DeidentificationMethod", "StudyDescription")


def nodule_segmentation(sources: Sequence[Dataset], mask: np.ndarray, model: str, *,
                        series_uid: str | None = None, instance_uid: str | None = None):
    """A BINARY `hd.seg.Segmentation` of `mask` (frames, rows, columns; nonzero =
    nodule), frame k over CT slice `sources[k]` (full datasets or headers
    without Pixel Data, of one series), made by ctsynth model `model` ("name:version")."""
    import highdicom as hd

    mask = np.asarray(mask)
    if mask.ndim != 3 or mask.shape[0] != len(sources) or any(
            mask.shape[1:] != (ds.Rows, ds.Columns) for ds in sources):
        raise ValueError(f"mask of shape {mask.shape} does not match {len(sources)} source slices")
    name, _, version = model.partition(":")
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Nodule,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=f"ctsynth {name}", version=version or "unversioned", family=codes.cid7162.ArtificialIntelligence),
    )
    seg = hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=mask.astype(bool),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=series_uid or generate_uid(),
        series_number=int(sources[0].get("SeriesNumber") or 1) + 1,
        sop_instance_uid=instance_uid or generate_uid(),
        instance_number=1,
        manufacturer="ctsynth",
        manufacturer_model_name="ctsynth sampling",
        software_versions=ctsynth.__version__,
        device_serial_number="none",
        content_label=CONTENT_LABEL,
        content_description=f"synthetic nodule mask from ctsynth model {model}"[:64],
        content_creator_name=None,
        omit_empty_frames=False,
    )
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    if measures.get("SliceThickness") in (None, ""):
        # A lone 2D slice has no known thickness (Type 2, left empty, in the CT);
        # the SEG's Pixel Measures need one (1C, required with a Frame of
        # Reference): a nominal 1 mm, as for a model whose voxel size is unknown.
        measures.SliceThickness = NOMINAL_THICKNESS_MM
    for keyword in _SYNTHETIC_MARKS:
        if keyword in sources[0]:
            setattr(seg, keyword, sources[0][keyword].value)
    seg.SeriesDescription = f"synthetic nodule mask from ctsynth model {model}"
    if "ImageComments" in sources[0]:
        seg.ImageComments = sources[0].ImageComments
    return seg


def segmentation_bytes(seg: Dataset) -> bytes:
    """A segmentation as a DICOM file (Part 10, with its File Meta)."""
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
