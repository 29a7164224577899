"""Mask-conditioned sampling through the real server: the mask, layout or
nodule count of a request reaches the model, every item carries its
conditioning mask and nodule list, and bad conditions are INVALID_ARGUMENT
with the reason."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from scipy import ndimage

from ctsynth.conditioning.layout import MAX_NODULES, Nodule, rasterise
from ctsynth.storage import open_store
from ctsynth.v1 import common_pb2
from ctsynth.v1 import sampling_pb2 as pb

MODEL, SIDE = "ddpm3d-mask", 8
FAST = pb.SamplerSettings(steps=2)


def items(stub, **request) -> list[pb.SampleItem]:
    return [item for batch in stub.Sample(pb.SampleRequest(model=MODEL, sampler=FAST, **request))
            for item in batch.items]


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def cube(corner: tuple[int, int, int], side: int = 3) -> np.ndarray:
    mask = np.zeros((SIDE,) * 3, np.uint8)
    mask[tuple(slice(c, c + side) for c in corner)] = 1
    return mask


def mask_of(item: pb.SampleItem) -> np.ndarray:
    return np.frombuffer(item.mask, np.uint8).reshape(item.shape[1:])


def spacing(store_uri: str) -> tuple[float, ...]:
    return tuple(open_store(store_uri).get_json("models/ddpm3d-mask/1/config.json")["spacing_mm"])


def test_the_model_is_listed_as_mask_conditioned(stub):
    from ctsynth.v1 import sampling_pb2_grpc  # noqa: F401 - the stub's module

    assert stub.GetModel(common_pb2.GetModelRequest(model=MODEL)).mask_conditioned
    assert not stub.GetModel(common_pb2.GetModelRequest(model="ddpm3d")).mask_conditioned


def test_a_mask_in_the_request_conditions_every_item_and_comes_back_with_its_nodules(stub):
    mask = cube((1, 2, 3))
    got = items(stub, count=2, seed=4, mask=pb.MaskInput(data=npy(mask)))
    assert [item.index for item in got] == [0, 1]
    for item in got:
        np.testing.assert_array_equal(mask_of(item), mask)
        (nodule,) = item.nodules
        np.testing.assert_allclose(nodule.centre, (2, 3, 4))  # the cube's centroid, in voxels
        assert nodule.units == pb.NODULE_UNITS_VOXEL and nodule.diameter_mm > 0
    other = items(stub, count=2, seed=4, mask=pb.MaskInput(data=npy(cube((4, 4, 4)))))
    assert got[0].data != other[0].data  # the same seeds, another mask: other pixels


def test_one_mask_per_item_is_a_stack(stub):
    stack = np.stack([cube((0, 0, 0)), cube((4, 4, 4), 2)])
    got = items(stub, count=2, mask=pb.MaskInput(data=npy(stack)))
    for item, mask in zip(got, stack):
        np.testing.assert_array_equal(mask_of(item), mask)


def test_a_layout_is_drawn_as_the_mask(stub, store_uri):
    grid = spacing(store_uri)
    layout = [pb.Nodule(centre=[4, 4, 4], diameter_mm=25.0),
              pb.Nodule(centre=[0.0, 0.0, -20.0], units=pb.NODULE_UNITS_MM, diameter_mm=12.0,
                        characteristics={"texture": 5})]
    (item,) = items(stub, count=1, nodules=layout)
    expected = rasterise([Nodule((4, 4, 4), 25.0), Nodule((0.0, 0.0, -20.0), 12.0, "mm", (("texture", 5),))],
                         (SIDE,) * 3, grid)
    np.testing.assert_array_equal(mask_of(item), expected)
    assert [n.diameter_mm for n in item.nodules] == [25.0, 12.0] and dict(item.nodules[1].characteristics) == {
        "texture": 5}


def test_n_nodules_please_draws_a_plausible_layout_per_item_that_its_seed_regenerates(stub):
    """(The tiny training set has two nodule sites in 8^3 voxels of 11 mm:
    room for one nodule per item; tests/conditioning place several.)"""
    got = items(stub, count=3, seed=11, nodule_count=1)
    layouts = [tuple(tuple(n.centre) for n in item.nodules) for item in got]
    assert all(len(item.nodules) == 1 for item in got) and len(set(layouts)) == 3
    for item in got:
        assert ndimage.label(mask_of(item))[1] >= 1 and mask_of(item).any()
    (again,) = items(stub, count=1, seed=got[2].seed, nodule_count=1)
    assert again.data == got[2].data and again.mask == got[2].mask
    assert [tuple(n.centre) for n in again.nodules] == list(layouts[2])
    (default,) = items(stub, count=1, seed=11)
    assert default.mask == got[0].mask  # no condition at all: one plausible nodule


def test_a_mask_from_the_store(stub, store_uri):
    store = open_store(store_uri)
    store.put("uploads/mask.npy", npy(cube((2, 2, 2))))
    for reference in ("uploads/mask.npy", store.uri_for("uploads/mask.npy")):
        (item,) = items(stub, count=1, mask=pb.MaskInput(uri=reference))
        np.testing.assert_array_equal(mask_of(item), cube((2, 2, 2)))


INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("request_fields, detail", [
    (dict(mask=pb.MaskInput(data=npy(np.ones((4, 4, 4), np.uint8)))), "mask: of shape (4, 4, 4); this model needs"),
    (dict(mask=pb.MaskInput(data=npy(np.zeros((8, 8, 8), np.uint8)))), "mask: has no nodule voxel"),
    (dict(mask=pb.MaskInput(data=npy(np.full((8, 8, 8), 9, np.uint8)))), "mask: holds the value 9"),
    (dict(mask=pb.MaskInput(data=b"\x00garbage")), "mask: is neither .npy"),
    (dict(mask=pb.MaskInput(data=npy(cube((1, 1, 1)))[:-40])), "mask: is a truncated"),
    (dict(mask=pb.MaskInput(uri="s3://elsewhere/mask.npy")), "mask.uri: s3://elsewhere/mask.npy is outside"),
    (dict(mask=pb.MaskInput(uri="uploads/../../etc/passwd")), "mask.uri: "),
    (dict(mask=pb.MaskInput(uri="uploads/none.npy")), "mask.uri: no object"),
    (dict(nodules=[pb.Nodule(centre=[4, 4, 9], diameter_mm=5)]), "nodules[0].centre: "),
    (dict(nodules=[pb.Nodule(centre=[4, 4, 4], diameter_mm=500)]), "nodules[0].diameter_mm: 500 mm is larger"),
    (dict(nodules=[pb.Nodule(centre=[4, 4], diameter_mm=5)]), "nodules[0].centre: "),
    (dict(nodules=[pb.Nodule(centre=[4, 4, 4], diameter_mm=5, units=7)]), "nodules.units: "),
    (dict(nodules=[pb.Nodule(centre=[4, 4, 4], diameter_mm=5)] * (MAX_NODULES + 1)), "nodules: 33 nodules"),
    (dict(nodule_count=MAX_NODULES + 1), "nodule_count: 33 is outside"),
    (dict(nodule_count=-1), "nodule_count: -1 must be >= 0"),
    (dict(nodule_count=2, mask=pb.MaskInput(data=npy(cube((1, 1, 1))))), "nodule_count: give one of"),
])
def test_bad_conditions_are_invalid_argument_with_the_reason(stub, request_fields, detail):
    with pytest.raises(grpc.RpcError) as raised:
        items(stub, count=1, **request_fields)
    assert raised.value.code() == INVALID
    assert raised.value.details().startswith(detail), raised.value.details()


def test_a_model_without_mask_input_refuses_conditions(stub):
    for fields, name in ((dict(nodule_count=1), "nodule_count"),
                         (dict(mask=pb.MaskInput(data=npy(cube((1, 1, 1))))), "mask")):
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.Sample(pb.SampleRequest(model="ddpm3d", count=1, sampler=FAST, **fields)))
        assert raised.value.code() == INVALID and raised.value.details().startswith(f"{name}: this ddpm3d model")
