from ctsynth.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SamplerKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLER_KIND_UNSPECIFIED: _ClassVar[SamplerKind]
    SAMPLER_KIND_DDPM: _ClassVar[SamplerKind]
    SAMPLER_KIND_DDIM: _ClassVar[SamplerKind]
    SAMPLER_KIND_PNDM: _ClassVar[SamplerKind]
    SAMPLER_KIND_EULER_ANCESTRAL: _ClassVar[SamplerKind]
    SAMPLER_KIND_DPM_SOLVER: _ClassVar[SamplerKind]
    SAMPLER_KIND_UNIPC: _ClassVar[SamplerKind]
    SAMPLER_KIND_RFLOW: _ClassVar[SamplerKind]
    SAMPLER_KIND_FLOW_EULER: _ClassVar[SamplerKind]

class OutputFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_FORMAT_UNSPECIFIED: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_FLOAT16: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_HU_INT16: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_PNG8: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_PNG16: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_DICOM: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_NIFTI: _ClassVar[OutputFormat]

class NoduleUnits(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODULE_UNITS_UNSPECIFIED: _ClassVar[NoduleUnits]
    NODULE_UNITS_VOXEL: _ClassVar[NoduleUnits]
    NODULE_UNITS_MM: _ClassVar[NoduleUnits]
SAMPLER_KIND_UNSPECIFIED: SamplerKind
SAMPLER_KIND_DDPM: SamplerKind
SAMPLER_KIND_DDIM: SamplerKind
SAMPLER_KIND_PNDM: SamplerKind
SAMPLER_KIND_EULER_ANCESTRAL: SamplerKind
SAMPLER_KIND_DPM_SOLVER: SamplerKind
SAMPLER_KIND_UNIPC: SamplerKind
SAMPLER_KIND_RFLOW: SamplerKind
SAMPLER_KIND_FLOW_EULER: SamplerKind
OUTPUT_FORMAT_UNSPECIFIED: OutputFormat
OUTPUT_FORMAT_FLOAT16: OutputFormat
OUTPUT_FORMAT_HU_INT16: OutputFormat
OUTPUT_FORMAT_PNG8: OutputFormat
OUTPUT_FORMAT_PNG16: OutputFormat
OUTPUT_FORMAT_DICOM: OutputFormat
OUTPUT_FORMAT_NIFTI: OutputFormat
NODULE_UNITS_UNSPECIFIED: NoduleUnits
NODULE_UNITS_VOXEL: NoduleUnits
NODULE_UNITS_MM: NoduleUnits

class SamplerSettings(_message.Message):
    __slots__ = ("kind", "steps", "eta", "guidance_scale")
    KIND_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    kind: SamplerKind
    steps: int
    eta: float
    guidance_scale: float
    def __init__(self, kind: _Optional[_Union[SamplerKind, str]] = ..., steps: _Optional[int] = ..., eta: _Optional[float] = ..., guidance_scale: _Optional[float] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("model", "count", "seed", "condition", "sampler", "truncation_psi", "format", "batch_size", "slab_slices", "mask", "nodules", "nodule_count")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_PSI_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SLAB_SLICES_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    NODULES_FIELD_NUMBER: _ClassVar[int]
    NODULE_COUNT_FIELD_NUMBER: _ClassVar[int]
    model: str
    count: int
    seed: int
    condition: _common_pb2.Condition
    sampler: SamplerSettings
    truncation_psi: float
    format: OutputFormat
    batch_size: int
    slab_slices: int
    mask: MaskInput
    nodules: _containers.RepeatedCompositeFieldContainer[Nodule]
    nodule_count: int
    def __init__(self, model: _Optional[str] = ..., count: _Optional[int] = ..., seed: _Optional[int] = ..., condition: _Optional[_Union[_common_pb2.Condition, str]] = ..., sampler: _Optional[_Union[SamplerSettings, _Mapping]] = ..., truncation_psi: _Optional[float] = ..., format: _Optional[_Union[OutputFormat, str]] = ..., batch_size: _Optional[int] = ..., slab_slices: _Optional[int] = ..., mask: _Optional[_Union[MaskInput, _Mapping]] = ..., nodules: _Optional[_Iterable[_Union[Nodule, _Mapping]]] = ..., nodule_count: _Optional[int] = ...) -> None: ...

class MaskInput(_message.Message):
    __slots__ = ("data", "uri")
    DATA_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    uri: str
    def __init__(self, data: _Optional[bytes] = ..., uri: _Optional[str] = ...) -> None: ...

class Nodule(_message.Message):
    __slots__ = ("centre", "units", "diameter_mm", "characteristics")
    class CharacteristicsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CENTRE_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    DIAMETER_MM_FIELD_NUMBER: _ClassVar[int]
    CHARACTERISTICS_FIELD_NUMBER: _ClassVar[int]
    centre: _containers.RepeatedScalarFieldContainer[float]
    units: NoduleUnits
    diameter_mm: float
    characteristics: _containers.ScalarMap[str, int]
    def __init__(self, centre: _Optional[_Iterable[float]] = ..., units: _Optional[_Union[NoduleUnits, str]] = ..., diameter_mm: _Optional[float] = ..., characteristics: _Optional[_Mapping[str, int]] = ...) -> None: ...

class SampleItem(_message.Message):
    __slots__ = ("index", "seed", "condition", "format", "data", "shape", "dtype", "mask", "z0", "depth", "nodules")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    Z0_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    NODULES_FIELD_NUMBER: _ClassVar[int]
    index: int
    seed: int
    condition: _common_pb2.Condition
    format: OutputFormat
    data: bytes
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    mask: bytes
    z0: int
    depth: int
    nodules: _containers.RepeatedCompositeFieldContainer[Nodule]
    def __init__(self, index: _Optional[int] = ..., seed: _Optional[int] = ..., condition: _Optional[_Union[_common_pb2.Condition, str]] = ..., format: _Optional[_Union[OutputFormat, str]] = ..., data: _Optional[bytes] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., mask: _Optional[bytes] = ..., z0: _Optional[int] = ..., depth: _Optional[int] = ..., nodules: _Optional[_Iterable[_Union[Nodule, _Mapping]]] = ...) -> None: ...

class SampleBatch(_message.Message):
    __slots__ = ("items", "model", "sampler", "truncation_psi", "total_count")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_PSI_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SampleItem]
    model: str
    sampler: SamplerSettings
    truncation_psi: float
    total_count: int
    def __init__(self, items: _Optional[_Iterable[_Union[SampleItem, _Mapping]]] = ..., model: _Optional[str] = ..., sampler: _Optional[_Union[SamplerSettings, _Mapping]] = ..., truncation_psi: _Optional[float] = ..., total_count: _Optional[int] = ...) -> None: ...
