"""One name table per proto enum, read from the descriptors, and the
library's own vocabularies spelled the same way."""

from __future__ import annotations

import pytest

from ctsynth import proto_enums
from ctsynth.diffusion import SAMPLER_KINDS
from ctsynth.errors import InvalidArgument
from ctsynth.ingest.options import SOURCE_KINDS
from ctsynth.conditioning.layout import UNITS
from ctsynth.proto_enums import (CONDITION, MASK_MODE, NODULE_UNITS, OUTPUT_FORMAT, PRECISION, SAMPLER_KIND,
                                 SOURCE_KIND, VIEW, EnumTable)
from ctsynth.sampling.formats import FORMATS
from ctsynth.training.spec import PRECISIONS
from ctsynth.v1 import common_pb2, ingest_pb2, sampling_pb2, training_pb2

TABLES = [value for value in vars(proto_enums).values() if isinstance(value, EnumTable)]
ENUMS = [common_pb2.JobState, common_pb2.Condition, ingest_pb2.SourceKind, ingest_pb2.View, ingest_pb2.MaskMode,
         sampling_pb2.SamplerKind, sampling_pb2.OutputFormat, sampling_pb2.NoduleUnits, training_pb2.Precision]


def test_every_proto_enum_has_one_table():
    enums = {enum.DESCRIPTOR.full_name: enum for enum in ENUMS}
    assert sorted(table.proto for table in TABLES) == sorted(enums)
    for table in TABLES:
        assert sorted(table.values.values()) == sorted(n for n in enums[table.proto].values() if n)


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.field)
def test_names_and_numbers_round_trip(table):
    for name, number in table.values.items():
        assert table.number(name) == number and table.name(number) == name
    for alias, name in table.aliases.items():
        assert table.number(alias) == table.number(name) and table.canonical(alias) == name
    assert table.name(0) == table.unspecified and table.number(None) == 0


def test_names_come_from_the_proto():
    assert OUTPUT_FORMAT.values["hu_int16"] == sampling_pb2.OUTPUT_FORMAT_HU_INT16
    assert SAMPLER_KIND.values["euler_ancestral"] == sampling_pb2.SAMPLER_KIND_EULER_ANCESTRAL
    assert CONDITION.values == {"no-tumor": common_pb2.CONDITION_NO_TUMOR, "tumor": common_pb2.CONDITION_TUMOR}
    assert MASK_MODE.name(0) == "merge" and SOURCE_KIND.number("auto") == 0 and PRECISION.name(0) == "fp32"


def test_unknown_values_name_their_field():
    with pytest.raises(InvalidArgument) as err:
        SAMPLER_KIND.number("plms")
    assert err.value.field == "sampler.kind" and "use one of ddpm, ddim, pndm, euler_ancestral, dpm_solver, unipc, rflow, flow_euler, euler-a" in str(err.value)
    with pytest.raises(InvalidArgument) as err:
        OUTPUT_FORMAT.name(99)
    assert err.value.field == "format" and "99" in str(err.value)
    assert VIEW.name(0) is None  # no default view: the servicer refuses it


def test_the_library_speaks_the_same_names():
    assert PRECISION.names == PRECISIONS
    assert set(OUTPUT_FORMAT.names) == set(FORMATS)
    assert set(SAMPLER_KIND.names) == set(SAMPLER_KINDS)
    assert set(SOURCE_KIND.choices) == set(SOURCE_KINDS)
    assert set(NODULE_UNITS.names) == set(UNITS)
