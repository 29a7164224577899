import datetime

from ctsynth.v1 import common_pb2 as _common_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SourceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_KIND_UNSPECIFIED: _ClassVar[SourceKind]
    SOURCE_KIND_LIDC: _ClassVar[SourceKind]
    SOURCE_KIND_DICOM: _ClassVar[SourceKind]
    SOURCE_KIND_SLICES: _ClassVar[SourceKind]

class View(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VIEW_UNSPECIFIED: _ClassVar[View]
    VIEW_AXIAL: _ClassVar[View]
    VIEW_CORONAL: _ClassVar[View]
    VIEW_SAGITTAL: _ClassVar[View]

class MaskMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MASK_MODE_UNSPECIFIED: _ClassVar[MaskMode]
    MASK_MODE_MERGE: _ClassVar[MaskMode]
    MASK_MODE_CONSENSUS: _ClassVar[MaskMode]
SOURCE_KIND_UNSPECIFIED: SourceKind
SOURCE_KIND_LIDC: SourceKind
SOURCE_KIND_DICOM: SourceKind
SOURCE_KIND_SLICES: SourceKind
VIEW_UNSPECIFIED: View
VIEW_AXIAL: View
VIEW_CORONAL: View
VIEW_SAGITTAL: View
MASK_MODE_UNSPECIFIED: MaskMode
MASK_MODE_MERGE: MaskMode
MASK_MODE_CONSENSUS: MaskMode

class Window(_message.Message):
    __slots__ = ("min_hu", "max_hu")
    MIN_HU_FIELD_NUMBER: _ClassVar[int]
    MAX_HU_FIELD_NUMBER: _ClassVar[int]
    min_hu: float
    max_hu: float
    def __init__(self, min_hu: _Optional[float] = ..., max_hu: _Optional[float] = ...) -> None: ...

class SliceOptions(_message.Message):
    __slots__ = ("views", "size", "min_mean_intensity", "no_balance", "min_nodule_pixels")
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_MEAN_INTENSITY_FIELD_NUMBER: _ClassVar[int]
    NO_BALANCE_FIELD_NUMBER: _ClassVar[int]
    MIN_NODULE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    views: _containers.RepeatedScalarFieldContainer[View]
    size: int
    min_mean_intensity: float
    no_balance: bool
    min_nodule_pixels: int
    def __init__(self, views: _Optional[_Iterable[_Union[View, str]]] = ..., size: _Optional[int] = ..., min_mean_intensity: _Optional[float] = ..., no_balance: _Optional[bool] = ..., min_nodule_pixels: _Optional[int] = ...) -> None: ...

class VolumeOptions(_message.Message):
    __slots__ = ("disabled", "size", "isotropic_spacing_mm", "export_nifti")
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ISOTROPIC_SPACING_MM_FIELD_NUMBER: _ClassVar[int]
    EXPORT_NIFTI_FIELD_NUMBER: _ClassVar[int]
    disabled: bool
    size: int
    isotropic_spacing_mm: float
    export_nifti: bool
    def __init__(self, disabled: _Optional[bool] = ..., size: _Optional[int] = ..., isotropic_spacing_mm: _Optional[float] = ..., export_nifti: _Optional[bool] = ...) -> None: ...

class MaskOptions(_message.Message):
    __slots__ = ("mode", "consensus_level")
    MODE_FIELD_NUMBER: _ClassVar[int]
    CONSENSUS_LEVEL_FIELD_NUMBER: _ClassVar[int]
    mode: MaskMode
    consensus_level: float
    def __init__(self, mode: _Optional[_Union[MaskMode, str]] = ..., consensus_level: _Optional[float] = ...) -> None: ...

class SplitFractions(_message.Message):
    __slots__ = ("train", "validation", "test")
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    train: float
    validation: float
    test: float
    def __init__(self, train: _Optional[float] = ..., validation: _Optional[float] = ..., test: _Optional[float] = ...) -> None: ...

class StartIngestRequest(_message.Message):
    __slots__ = ("source", "source_kind", "dataset", "window", "slices", "volumes", "masks", "split", "seed", "max_series")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KIND_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    SLICES_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_SERIES_FIELD_NUMBER: _ClassVar[int]
    source: str
    source_kind: SourceKind
    dataset: str
    window: Window
    slices: SliceOptions
    volumes: VolumeOptions
    masks: MaskOptions
    split: SplitFractions
    seed: int
    max_series: int
    def __init__(self, source: _Optional[str] = ..., source_kind: _Optional[_Union[SourceKind, str]] = ..., dataset: _Optional[str] = ..., window: _Optional[_Union[Window, _Mapping]] = ..., slices: _Optional[_Union[SliceOptions, _Mapping]] = ..., volumes: _Optional[_Union[VolumeOptions, _Mapping]] = ..., masks: _Optional[_Union[MaskOptions, _Mapping]] = ..., split: _Optional[_Union[SplitFractions, _Mapping]] = ..., seed: _Optional[int] = ..., max_series: _Optional[int] = ...) -> None: ...

class SplitCounts(_message.Message):
    __slots__ = ("patients", "slices", "tumor_slices", "volumes")
    PATIENTS_FIELD_NUMBER: _ClassVar[int]
    SLICES_FIELD_NUMBER: _ClassVar[int]
    TUMOR_SLICES_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    patients: int
    slices: int
    tumor_slices: int
    volumes: int
    def __init__(self, patients: _Optional[int] = ..., slices: _Optional[int] = ..., tumor_slices: _Optional[int] = ..., volumes: _Optional[int] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("name", "version", "created", "source", "manifest", "slices", "volumes", "extra", "patients", "series", "slices_count", "tumor_slices", "volumes_count", "splits", "parameters", "job_id")
    class SplitsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SplitCounts
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[SplitCounts, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SLICES_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    PATIENTS_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    SLICES_COUNT_FIELD_NUMBER: _ClassVar[int]
    TUMOR_SLICES_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_COUNT_FIELD_NUMBER: _ClassVar[int]
    SPLITS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    created: _timestamp_pb2.Timestamp
    source: str
    manifest: _common_pb2.ArtifactRef
    slices: _common_pb2.ArtifactRef
    volumes: _common_pb2.ArtifactRef
    extra: _containers.RepeatedCompositeFieldContainer[_common_pb2.ArtifactRef]
    patients: int
    series: int
    slices_count: int
    tumor_slices: int
    volumes_count: int
    splits: _containers.MessageMap[str, SplitCounts]
    parameters: _struct_pb2.Struct
    job_id: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ..., manifest: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., slices: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., volumes: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., extra: _Optional[_Iterable[_Union[_common_pb2.ArtifactRef, _Mapping]]] = ..., patients: _Optional[int] = ..., series: _Optional[int] = ..., slices_count: _Optional[int] = ..., tumor_slices: _Optional[int] = ..., volumes_count: _Optional[int] = ..., splits: _Optional[_Mapping[str, SplitCounts]] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., job_id: _Optional[str] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    def __init__(self, dataset: _Optional[str] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ("name", "page_size", "page_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    page_size: int
    page_token: str
    def __init__(self, name: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets", "next_page_token")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    next_page_token: str
    def __init__(self, datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
