"""IngestService: a thin servicer over the ingestion pipeline and the job
manager. Requests become `IngestOptions` (validated there, the source
confined to the allowed roots); each job publishes one dataset version under
`datasets/<name>/<version>/`."""

from __future__ import annotations

from ctsynth.config import ServerSettings
from ctsynth.errors import InvalidArgument
from ctsynth.ingest.pipeline import IngestOptions, remove_leftovers, run_ingest
from ctsynth.jobs import JobContext, JobManager, JobResult
from ctsynth.proto_enums import MASK_MODE, SOURCE_KIND, VIEW
from ctsynth.registry import Registry, check_name, parse_ref
from ctsynth.roots import AllowedRoots
from ctsynth.servicers.jobs import JobRpcs
from ctsynth.storage import ObjectStore
from ctsynth.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc

# IngestOptions field -> the request field a client sets.
REQUEST_FIELDS = {
    "views": "slices.views", "slice_size": "slices.size", "min_mean_intensity": "slices.min_mean_intensity",
    "min_nodule_pixels": "slices.min_nodule_pixels", "volume_size": "volumes.size",
    "isotropic_spacing_mm": "volumes.isotropic_spacing_mm", "mask_mode": "masks.mode",
    "consensus_level": "masks.consensus_level",
}


def options_from_request(request: ingest_pb2.StartIngestRequest, roots: AllowedRoots) -> IngestOptions:
    """The pipeline's options; unset request fields keep the pipeline's defaults.
    A source outside `roots` is refused here, before a job exists."""
    if not request.source.strip():
        raise InvalidArgument("source", "a local path or object-store URI is required")
    roots.resolve(request.source.strip(), "source")
    check_name(request.dataset, "dataset")
    values: dict = {"source": request.source.strip(), "dataset": request.dataset,
                    "seed": request.seed, "max_series": request.max_series}
    values["source_kind"] = SOURCE_KIND.name(request.source_kind)
    if request.HasField("window"):
        values["window"] = (request.window.min_hu, request.window.max_hu)
    if request.HasField("slices"):
        slices = request.slices
        views = tuple(VIEW.name(v) for v in slices.views)
        if None in views:
            raise InvalidArgument("slices.views", f"VIEW_UNSPECIFIED; use one of {', '.join(VIEW.names)}")
        if views:
            values["views"] = views
        if slices.size:
            values["slice_size"] = slices.size
        if slices.min_mean_intensity:
            values["min_mean_intensity"] = slices.min_mean_intensity
        if slices.min_nodule_pixels:
            values["min_nodule_pixels"] = slices.min_nodule_pixels
        values["balance"] = not slices.no_balance
    if request.HasField("volumes"):
        volumes = request.volumes
        values["volumes"] = not volumes.disabled
        values["export_nifti"] = volumes.export_nifti
        if volumes.size:
            values["volume_size"] = volumes.size
        if volumes.isotropic_spacing_mm:
            values["isotropic_spacing_mm"] = volumes.isotropic_spacing_mm
    if request.HasField("masks"):
        values["mask_mode"] = MASK_MODE.name(request.masks.mode)
        if request.masks.consensus_level:
            values["consensus_level"] = request.masks.consensus_level
    if request.HasField("split"):
        values["split"] = (request.split.train, request.split.validation, request.split.test)
    try:
        return IngestOptions(**values)
    except InvalidArgument as exc:
        raise InvalidArgument(REQUEST_FIELDS.get(exc.field, exc.field), str(exc).split(": ", 1)[-1]) from None


def _artifact(store: ObjectStore, key: str, entry: dict, media_type: str) -> common_pb2.ArtifactRef:
    return common_pb2.ArtifactRef(uri=store.uri_for(key), sha256=entry["sha256"], size_bytes=entry["size"],
                                  media_type=media_type)


def dataset_message(registry: Registry, name: str, version: str) -> ingest_pb2.Dataset:
    """The Dataset message of a published version, from its manifest."""
    prefix = registry.prefix(name, version)
    manifest = registry.manifest(name, version)
    store = registry.store
    files = manifest.get("files", {})
    counts = manifest.get("counts", {})
    message = ingest_pb2.Dataset(
        name=name, version=version, source=manifest.get("source", ""), job_id=manifest.get("job_id", ""),
        patients=counts.get("patients", 0), series=counts.get("series", 0),
        slices_count=counts.get("slices", 0), tumor_slices=counts.get("tumor_slices", 0),
        volumes_count=counts.get("volumes", 0),
    )
    manifest_info = store.stat(f"{prefix}/manifest.json")
    message.manifest.CopyFrom(common_pb2.ArtifactRef(uri=store.uri_for(manifest_info.key),
                                                     sha256=manifest_info.sha256 or "",
                                                     size_bytes=manifest_info.size, media_type="application/json"))
    message.created.FromDatetime(manifest_info.modified)
    for file_name, entry in files.items():
        ref = _artifact(store, f"{prefix}/{file_name}", entry,
                        "application/x-hdf5" if file_name.endswith(".h5") else "application/octet-stream")
        if file_name == "slices.h5":
            message.slices.CopyFrom(ref)
        elif file_name == "volumes.h5":
            message.volumes.CopyFrom(ref)
        else:
            message.extra.append(ref)
    for split, split_counts in manifest.get("splits", {}).items():
        message.splits[split].CopyFrom(ingest_pb2.SplitCounts(**{
            k: split_counts.get(k, 0) for k in ("patients", "slices", "tumor_slices", "volumes")}))
    message.parameters.update(manifest.get("parameters", {}))
    return message


class IngestServicer(JobRpcs, ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, store: ObjectStore, settings: ServerSettings):
        self._store = store
        self._roots = settings.allowed_roots()
        self._work_dir = settings.service_work_dir("ingest")
        self._datasets = Registry(store, "datasets", "dataset")
        remove_leftovers(self._work_dir)  # before recover(): no job of this process runs yet
        self._jobs = JobManager(store, "ingest", self._run)
        self._jobs.recover()

    def _run(self, job: common_pb2.Job, request: dict, ctx: JobContext) -> JobResult:
        options = IngestOptions.from_json(request)
        version = job.labels.get("version") or self._datasets.allocate(options.dataset)
        ctx.label("version", version)
        prefix = self._datasets.prefix(options.dataset, version)
        manifest = run_ingest(options, self._store, prefix, ctx, roots=self._roots, work_dir=self._work_dir)
        artifacts = tuple(_artifact(self._store, f"{prefix}/{name}", entry, "application/octet-stream")
                          for name, entry in manifest.get("files", {}).items())
        return JobResult(result=f"{options.dataset}:{version}", artifacts=artifacts)

    def StartIngest(self, request, context):
        return self._jobs.submit(options_from_request(request, self._roots).to_json())

    def GetDataset(self, request, context):
        name, version = self._datasets.resolve(parse_ref(request.dataset, "dataset"))
        return dataset_message(self._datasets, name, version)

    def ListDatasets(self, request, context):
        names = [check_name(request.name)] if request.name else self._datasets.names()
        datasets = [dataset_message(self._datasets, name, version)
                    for name in names for version in self._datasets.versions(name)]
        return ingest_pb2.ListDatasetsResponse(datasets=datasets)
