"""The request check every servicer can run first: finite numbers, known enum values."""

from __future__ import annotations

import math

import pytest

from ctsynth.errors import InvalidArgument
from ctsynth.rpc.validation import check_message
from ctsynth.v1 import common_pb2, training_pb2


def submit(**fields) -> training_pb2.SubmitTrainingRequest:
    hyperparameters = fields.pop("hyperparameters", {})
    request = training_pb2.SubmitTrainingRequest(family="dcgan", **fields)
    request.hyperparameters.update(hyperparameters)
    return request


@pytest.mark.parametrize(("message", "field"), [
    (submit(budget=training_pb2.Budget(epochs=math.nan)), "budget.epochs"),
    (submit(budget=training_pb2.Budget(kimg=-math.inf)), "budget.kimg"),
    (submit(scaling=training_pb2.Scaling(cpus_per_worker=math.inf)), "scaling.cpus_per_worker"),
    (submit(hyperparameters={"lr_g": math.nan}), "hyperparameters.lr_g"),
    (submit(hyperparameters={"widths": [8, {"deep": math.inf}]}), "hyperparameters.widths[1].deep"),
    (common_pb2.Model(headline={"fid": math.nan}), "headline.fid"),
], ids=["double", "oneof", "nested", "struct", "struct-list", "map"])
def test_a_non_finite_number_anywhere_is_refused_by_its_path(message, field):
    with pytest.raises(InvalidArgument) as err:
        check_message(message)
    assert err.value.field == field
    assert "is not a finite number" in str(err.value)


def test_an_unknown_enum_value_is_refused_listing_the_known_ones():
    with pytest.raises(InvalidArgument) as err:
        check_message(submit(precision=7))
    assert err.value.field == "precision"
    assert "unknown value 7; use one of PRECISION_UNSPECIFIED, PRECISION_FP32, PRECISION_BF16, PRECISION_FP16" \
        in str(err.value)


def test_a_valid_message_passes_unchanged():
    message = submit(precision=training_pb2.PRECISION_BF16, budget=training_pb2.Budget(epochs=2.5),
                     hyperparameters={"lr_g": 1e-4, "widths": [8, 16]})
    before = message.SerializeToString()
    assert check_message(message) is message
    assert message.SerializeToString() == before
