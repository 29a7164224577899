"""What every request must satisfy before a servicer reads it: numbers are
finite and enum values are known.

proto3 carries NaN and infinities in float fields and keeps enum numbers it
does not know, so neither is refused on the wire; left alone, a NaN budget
fails deep inside a job and an unknown enum silently reads as its default.
One walk over the whole message refuses both, naming the field.
"""

from __future__ import annotations

import math

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ctsynth.errors import InvalidArgument

# JSON-shaped well-known types: their own field names (fields, number_value,
# values) are not what the client wrote, so paths go through them unnamed.
_JSON_TYPES = frozenset({"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"})
_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)


def check_message(message: Message, path: str = "") -> Message:
    """`message` itself, once every float in it (at any depth, in maps, lists
    and Structs) is finite and every enum value is one its enum defines;
    INVALID_ARGUMENT naming the field otherwise."""
    transparent = message.DESCRIPTOR.full_name in _JSON_TYPES
    for field, value in message.ListFields():
        name = path if transparent else f"{path}.{field.name}" if path else field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                _check_value(entry, item, f"{name}.{key}")
        elif field.is_repeated:
            for index, item in enumerate(value):
                _check_value(field, item, f"{name}[{index}]")
        else:
            _check_value(field, value, name)
    return message


def _check_value(field: FieldDescriptor, value, path: str) -> None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        check_message(value, path)
    elif field.type in _FLOATS and not math.isfinite(value):
        raise InvalidArgument(path, f"{value} is not a finite number")
    elif field.type == FieldDescriptor.TYPE_ENUM and value not in field.enum_type.values_by_number:
        known = ", ".join(field.enum_type.values_by_name)
        raise InvalidArgument(path, f"unknown value {value}; use one of {known}")
