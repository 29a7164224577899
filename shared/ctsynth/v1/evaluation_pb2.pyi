import datetime

from ctsynth.v1 import common_pb2 as _common_pb2
from ctsynth.v1 import sampling_pb2 as _sampling_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelSamples(_message.Message):
    __slots__ = ("model", "count", "seed", "condition", "sampler", "truncation_psi")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_PSI_FIELD_NUMBER: _ClassVar[int]
    model: str
    count: int
    seed: int
    condition: _common_pb2.Condition
    sampler: _sampling_pb2.SamplerSettings
    truncation_psi: float
    def __init__(self, model: _Optional[str] = ..., count: _Optional[int] = ..., seed: _Optional[int] = ..., condition: _Optional[_Union[_common_pb2.Condition, str]] = ..., sampler: _Optional[_Union[_sampling_pb2.SamplerSettings, _Mapping]] = ..., truncation_psi: _Optional[float] = ...) -> None: ...

class StartEvaluationRequest(_message.Message):
    __slots__ = ("model", "synthetic_dataset", "dataset", "split", "metrics", "inception_weights", "med3d_weights", "domain_extractor", "repeats", "seed", "kid_subset_size", "spatial_dims")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SYNTHETIC_DATASET_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    INCEPTION_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    MED3D_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_EXTRACTOR_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    KID_SUBSET_SIZE_FIELD_NUMBER: _ClassVar[int]
    SPATIAL_DIMS_FIELD_NUMBER: _ClassVar[int]
    model: ModelSamples
    synthetic_dataset: str
    dataset: str
    split: str
    metrics: _containers.RepeatedScalarFieldContainer[str]
    inception_weights: str
    med3d_weights: str
    domain_extractor: str
    repeats: int
    seed: int
    kid_subset_size: int
    spatial_dims: int
    def __init__(self, model: _Optional[_Union[ModelSamples, _Mapping]] = ..., synthetic_dataset: _Optional[str] = ..., dataset: _Optional[str] = ..., split: _Optional[str] = ..., metrics: _Optional[_Iterable[str]] = ..., inception_weights: _Optional[str] = ..., med3d_weights: _Optional[str] = ..., domain_extractor: _Optional[str] = ..., repeats: _Optional[int] = ..., seed: _Optional[int] = ..., kid_subset_size: _Optional[int] = ..., spatial_dims: _Optional[int] = ...) -> None: ...

class MetricResult(_message.Message):
    __slots__ = ("name", "value", "std", "repeats", "failed", "error", "details", "feature_space")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SPACE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    std: float
    repeats: int
    failed: bool
    error: str
    details: _containers.ScalarMap[str, float]
    feature_space: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., std: _Optional[float] = ..., repeats: _Optional[int] = ..., failed: _Optional[bool] = ..., error: _Optional[str] = ..., details: _Optional[_Mapping[str, float]] = ..., feature_space: _Optional[str] = ...) -> None: ...

class Report(_message.Message):
    __slots__ = ("id", "model", "synthetic_dataset", "dataset", "split", "created", "metrics", "json", "html", "images", "job_id", "domain_extractor")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SYNTHETIC_DATASET_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    HTML_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_EXTRACTOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    synthetic_dataset: str
    dataset: str
    split: str
    created: _timestamp_pb2.Timestamp
    metrics: _containers.RepeatedCompositeFieldContainer[MetricResult]
    json: _common_pb2.ArtifactRef
    html: _common_pb2.ArtifactRef
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.ArtifactRef]
    job_id: str
    domain_extractor: str
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., synthetic_dataset: _Optional[str] = ..., dataset: _Optional[str] = ..., split: _Optional[str] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metrics: _Optional[_Iterable[_Union[MetricResult, _Mapping]]] = ..., json: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., html: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., images: _Optional[_Iterable[_Union[_common_pb2.ArtifactRef, _Mapping]]] = ..., job_id: _Optional[str] = ..., domain_extractor: _Optional[str] = ...) -> None: ...

class GetReportRequest(_message.Message):
    __slots__ = ("report_id",)
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    report_id: str
    def __init__(self, report_id: _Optional[str] = ...) -> None: ...

class ListReportsRequest(_message.Message):
    __slots__ = ("model", "page_size", "page_token")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model: str
    page_size: int
    page_token: str
    def __init__(self, model: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListReportsResponse(_message.Message):
    __slots__ = ("reports", "next_page_token")
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    reports: _containers.RepeatedCompositeFieldContainer[Report]
    next_page_token: str
    def __init__(self, reports: _Optional[_Iterable[_Union[Report, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
