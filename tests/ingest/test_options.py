"""IngestOptions refuse every bad value with the field's name, and round-trip through JSON."""

import pytest

from ctsynth.errors import InvalidArgument
from ctsynth.ingest import IngestOptions

BASE = {"source": "/data/lidc", "dataset": "lidc"}


def test_defaults_follow_the_research():
    options = IngestOptions(**BASE)
    assert options.window == (-1000.0, 400.0) and options.slice_size == 256 and options.volume_size == 128
    assert options.views == ("axial",) and options.mask_mode == "merge" and options.balance


def test_json_round_trip_turns_lists_into_tuples():
    options = IngestOptions(**BASE, views=["axial", "coronal"], window=[-1200, 600], split=[0.8, 0.1, 0.1])
    assert options.views == ("axial", "coronal")
    data = options.to_json()
    assert data["views"] == ["axial", "coronal"] and data["split"] == [0.8, 0.1, 0.1]
    assert IngestOptions.from_json(data) == options


@pytest.mark.parametrize("field, value", [
    ("dataset", "Bad Name"),
    ("dataset", "x" * 65),
    ("source", ""),
    ("source_kind", "nifti"),
    ("views", ("axial", "oblique")),
    ("views", ()),
    ("views", ("axial", "axial")),
    ("slice_size", 0),
    ("slice_size", 4096),
    ("volume_size", -1),
    ("volume_size", 2049),
    ("window", (400, -1000)),
    ("window", (0, 0)),
    ("window", (0, float("inf"))),
    ("split", (0.5, 0.5, 0.5)),
    ("split", (1.1, -0.1, 0.0)),
    ("split", (0.5, 0.5)),
    ("mask_mode", "vote"),
    ("consensus_level", 0.0),
    ("consensus_level", 1.5),
    ("min_mean_intensity", 1.0),
    ("min_nodule_pixels", -1),
    ("isotropic_spacing_mm", -0.5),
    ("seed", -1),
    ("max_series", -2),
    ("balance", "yes"),
    ("slice_size", 256.0),
])
def test_bad_values_name_their_field(field, value):
    with pytest.raises(InvalidArgument) as error:
        IngestOptions(**{**BASE, field: value})
    assert error.value.field == field


def test_from_json_refuses_unknown_and_missing_keys():
    with pytest.raises(InvalidArgument) as error:
        IngestOptions.from_json({**BASE, "colour": True})
    assert error.value.field == "colour"
    with pytest.raises(InvalidArgument) as error:
        IngestOptions.from_json({"dataset": "lidc"})
    assert error.value.field == "source"
