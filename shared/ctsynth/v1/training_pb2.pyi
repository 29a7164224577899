from ctsynth.v1 import common_pb2 as _common_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Precision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRECISION_UNSPECIFIED: _ClassVar[Precision]
    PRECISION_FP32: _ClassVar[Precision]
    PRECISION_BF16: _ClassVar[Precision]
    PRECISION_FP16: _ClassVar[Precision]
PRECISION_UNSPECIFIED: Precision
PRECISION_FP32: Precision
PRECISION_BF16: Precision
PRECISION_FP16: Precision

class Scaling(_message.Message):
    __slots__ = ("workers", "gpus_per_worker", "cpus_per_worker")
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    GPUS_PER_WORKER_FIELD_NUMBER: _ClassVar[int]
    CPUS_PER_WORKER_FIELD_NUMBER: _ClassVar[int]
    workers: int
    gpus_per_worker: float
    cpus_per_worker: float
    def __init__(self, workers: _Optional[int] = ..., gpus_per_worker: _Optional[float] = ..., cpus_per_worker: _Optional[float] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("steps", "epochs", "kimg")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    KIMG_FIELD_NUMBER: _ClassVar[int]
    steps: int
    epochs: float
    kimg: float
    def __init__(self, steps: _Optional[int] = ..., epochs: _Optional[float] = ..., kimg: _Optional[float] = ...) -> None: ...

class SubmitTrainingRequest(_message.Message):
    __slots__ = ("family", "dataset", "split", "name", "hyperparameters", "scaling", "precision", "budget", "checkpoint_interval", "seed", "image_size", "batch_size", "resume_from")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    SCALING_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_FIELD_NUMBER: _ClassVar[int]
    family: str
    dataset: str
    split: str
    name: str
    hyperparameters: _struct_pb2.Struct
    scaling: Scaling
    precision: Precision
    budget: Budget
    checkpoint_interval: int
    seed: int
    image_size: int
    batch_size: int
    resume_from: str
    def __init__(self, family: _Optional[str] = ..., dataset: _Optional[str] = ..., split: _Optional[str] = ..., name: _Optional[str] = ..., hyperparameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., scaling: _Optional[_Union[Scaling, _Mapping]] = ..., precision: _Optional[_Union[Precision, str]] = ..., budget: _Optional[_Union[Budget, _Mapping]] = ..., checkpoint_interval: _Optional[int] = ..., seed: _Optional[int] = ..., image_size: _Optional[int] = ..., batch_size: _Optional[int] = ..., resume_from: _Optional[str] = ...) -> None: ...

class HyperParameter(_message.Message):
    __slots__ = ("name", "type", "default", "constraint", "help")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    default: _struct_pb2.Value
    constraint: str
    help: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., default: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., constraint: _Optional[str] = ..., help: _Optional[str] = ...) -> None: ...

class Family(_message.Message):
    __slots__ = ("name", "description", "spatial_dims", "conditional", "needs_masks", "hyperparameters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SPATIAL_DIMS_FIELD_NUMBER: _ClassVar[int]
    CONDITIONAL_FIELD_NUMBER: _ClassVar[int]
    NEEDS_MASKS_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    spatial_dims: int
    conditional: bool
    needs_masks: bool
    hyperparameters: _containers.RepeatedCompositeFieldContainer[HyperParameter]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., spatial_dims: _Optional[int] = ..., conditional: _Optional[bool] = ..., needs_masks: _Optional[bool] = ..., hyperparameters: _Optional[_Iterable[_Union[HyperParameter, _Mapping]]] = ...) -> None: ...

class ListFamiliesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFamiliesResponse(_message.Message):
    __slots__ = ("families",)
    FAMILIES_FIELD_NUMBER: _ClassVar[int]
    families: _containers.RepeatedCompositeFieldContainer[Family]
    def __init__(self, families: _Optional[_Iterable[_Union[Family, _Mapping]]] = ...) -> None: ...
