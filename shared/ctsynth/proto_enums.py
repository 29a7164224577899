"""One string <-> number table per proto enum, read from its descriptor, for
the CLI, the client and the servicers alike.

A value's name is its proto name without the enum's prefix, in lower case
(`OUTPUT_FORMAT_HU_INT16` -> "hu_int16"), so a value added to a .proto is
known everywhere at once. What `*_UNSPECIFIED` (0) means differs per enum:
`unspecified` names it, or is None where it means "not given".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ctsynth.errors import InvalidArgument
from ctsynth.v1 import common_pb2, ingest_pb2, sampling_pb2, training_pb2


@dataclass(frozen=True)
class EnumTable:
    proto: str  # the enum's full proto name
    field: str  # the request field errors name
    values: Mapping[str, int]  # name -> number, UNSPECIFIED left out
    unspecified: str | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)  # other spellings the CLI and client accept

    @classmethod
    def of(cls, enum, field: str, unspecified: str | None = None, aliases: Mapping[str, str] | None = None,
           spelled: Mapping[str, str] | None = None):
        """`spelled`: a derived name -> the name users know it by (the other
        stays accepted as an alias)."""
        prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.DESCRIPTOR.name).upper() + "_"  # OutputFormat -> OUTPUT_FORMAT_
        spelled = dict(spelled or {})
        values = {}
        for name, number in enum.items():
            if number:
                derived = name.removeprefix(prefix).lower()
                values[spelled.get(derived, derived)] = number
        return cls(enum.DESCRIPTOR.full_name, field, values, unspecified, {**dict(aliases or {}), **spelled})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.values)

    @property
    def choices(self) -> tuple[str, ...]:
        """Every accepted spelling, for a CLI's `choices`."""
        extra = (self.unspecified,) if self.unspecified is not None and self.unspecified not in self.values else ()
        return (*extra, *self.values, *self.aliases)

    def number(self, name: str | None) -> int:
        """The enum number of `name` (or an alias); None, or the name of what
        UNSPECIFIED means where no value has it, is UNSPECIFIED."""
        name = self.aliases.get(name, name)
        if name in self.values:
            return self.values[name]
        if name is None or name == self.unspecified:
            return 0
        raise InvalidArgument(self.field, f"unknown {name!r}; use one of {', '.join(self.choices)}")

    def canonical(self, name: str | None) -> str | None:
        """The table's own name for `name` or an alias of it."""
        return self.name(self.number(name))

    def name(self, number: int) -> str | None:
        """The name of enum `number` (UNSPECIFIED: `unspecified`); a number
        this build does not know is INVALID_ARGUMENT."""
        if number == 0:
            return self.unspecified
        for name, value in self.values.items():
            if value == number:
                return name
        raise InvalidArgument(self.field, f"unknown enum value {number}")


PRECISION = EnumTable.of(training_pb2.Precision, "precision", unspecified="fp32")
SAMPLER_KIND = EnumTable.of(sampling_pb2.SamplerKind, "sampler.kind", aliases={"euler-a": "euler_ancestral"})
OUTPUT_FORMAT = EnumTable.of(sampling_pb2.OutputFormat, "format", unspecified="float16",
                              aliases={"npy": "float16", "hu": "hu_int16", "png": "png8"})
NODULE_UNITS = EnumTable.of(sampling_pb2.NoduleUnits, "nodules.units", unspecified="voxel")
CONDITION = EnumTable.of(common_pb2.Condition, "condition", spelled={"no_tumor": "no-tumor"})
SOURCE_KIND = EnumTable.of(ingest_pb2.SourceKind, "source_kind", unspecified="auto")
VIEW = EnumTable.of(ingest_pb2.View, "slices.views")
MASK_MODE = EnumTable.of(ingest_pb2.MaskMode, "masks.mode", unspecified="merge")
JOB_STATE = EnumTable.of(common_pb2.JobState, "state")
