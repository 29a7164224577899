"""SamplingService: a thin servicer over `ctsynth.sampling` (request <->
SampleSpec and Piece <-> SampleBatch) and the model registry."""

from __future__ import annotations

from ctsynth.conditioning.layout import Nodule
from ctsynth.conditioning.mask_input import decode_mask, read_mask_object
from ctsynth.config import ServerSettings
from ctsynth.errors import InvalidArgument
from ctsynth.proto_enums import CONDITION, NODULE_UNITS, OUTPUT_FORMAT, SAMPLER_KIND
from ctsynth.registry import Registry, parse_ref
from ctsynth.sampling.conditions import NoduleRequest
from ctsynth.sampling.engine import Cancellation, Piece, SampleSpec, SamplingEngine
from ctsynth.sampling.settings import SamplingSettings
from ctsynth.servicers.training import list_models, model_message
from ctsynth.storage import ObjectStore
from ctsynth.v1 import common_pb2, sampling_pb2, sampling_pb2_grpc

# The library's class label of each condition; None: either.
LABELS = {None: None, "no-tumor": 0, "tumor": 1}
CONDITIONS = {label: name for name, label in LABELS.items()}


def nodule_request(request: sampling_pb2.SampleRequest, store: ObjectStore | None) -> NoduleRequest:
    """The request's mask (decoded, from its bytes or the store), nodules or
    nodule count. Without a store (requests built for other services) a mask
    URI is refused."""
    masks = None
    source = request.mask.WhichOneof("source") if request.HasField("mask") else None
    if source == "data":
        masks = decode_mask(request.mask.data)
    elif source == "uri":
        if store is None:
            raise InvalidArgument("mask.uri", "this request takes no mask")
        masks = decode_mask(read_mask_object(store, request.mask.uri))
    nodules = tuple(
        Nodule(tuple(n.centre), n.diameter_mm, NODULE_UNITS.name(n.units), tuple(sorted(n.characteristics.items())))
        for n in request.nodules)
    return NoduleRequest(masks, nodules, request.nodule_count)


def nodule_message(nodule: Nodule) -> sampling_pb2.Nodule:
    return sampling_pb2.Nodule(centre=nodule.centre, units=NODULE_UNITS.number(nodule.units),
                               diameter_mm=nodule.diameter_mm, characteristics=dict(nodule.characteristics))


def sample_spec(request: sampling_pb2.SampleRequest, store: ObjectStore | None = None) -> SampleSpec:
    sampler = {}
    if request.sampler.kind:
        sampler["kind"] = SAMPLER_KIND.name(request.sampler.kind)
    if request.sampler.steps:
        sampler["steps"] = request.sampler.steps
    for name in ("eta", "guidance_scale"):
        if request.sampler.HasField(name):
            sampler[name] = getattr(request.sampler, name)
    return SampleSpec(
        model=request.model, count=request.count, seed=request.seed,
        condition=LABELS[CONDITION.name(request.condition)], sampler=sampler,
        truncation_psi=request.truncation_psi if request.HasField("truncation_psi") else None,
        format=OUTPUT_FORMAT.name(request.format), batch_size=request.batch_size,
        slab_slices=request.slab_slices if request.HasField("slab_slices") else None,
        nodules=nodule_request(request, store))


def batch_message(piece: Piece, spec: SampleSpec) -> sampling_pb2.SampleBatch:
    options = piece.options
    message = sampling_pb2.SampleBatch(model=piece.model, total_count=spec.count)
    if "kind" in options:
        message.sampler.kind = SAMPLER_KIND.number(options["kind"])
    if "steps" in options:
        message.sampler.steps = options["steps"]
    for name in ("eta", "guidance_scale"):
        if name in options:
            setattr(message.sampler, name, options[name])
    if "truncation_psi" in options:
        message.truncation_psi = options["truncation_psi"]
    for item in piece.items:
        message.items.add(index=item.index, seed=item.seed, condition=CONDITION.number(CONDITIONS[item.label]),
                          format=OUTPUT_FORMAT.number(spec.format), data=item.encoded.data, shape=item.encoded.shape,
                          dtype=item.encoded.dtype, mask=item.mask, z0=item.z0, depth=item.depth,
                          nodules=[nodule_message(nodule) for nodule in item.nodules])
    return message


class SamplingServicer(sampling_pb2_grpc.SamplingServiceServicer):
    def __init__(self, store: ObjectStore, settings: ServerSettings, sampling: SamplingSettings | None = None):
        self._models = Registry(store, "models", "model")
        self.engine = SamplingEngine(store, sampling or SamplingSettings.from_env(),
                                     max_message_bytes=settings.max_message_bytes)

    def Sample(self, request, context):
        spec = sample_spec(request, self.engine.store)
        cancellation = Cancellation()
        if not context.add_callback(cancellation.cancel):  # the call already ended
            return
        for piece in self.engine.stream(spec, cancellation):
            yield batch_message(piece, spec)

    def ListModels(self, request, context):
        return common_pb2.ListModelsResponse(models=list_models(self._models, request.family, request.name))

    def GetModel(self, request, context):
        name, version = self._models.resolve(parse_ref(request.model, "model"))
        return model_message(self._models, name, version)

    def close(self) -> None:
        self.engine.close()
