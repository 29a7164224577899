"""Settings from environment variables: defaults, parsing, and precise refusals."""

from __future__ import annotations

import pytest

from ctsynth.env_values import env_flag, env_float, env_int


def test_unset_or_blank_gives_the_default():
    assert env_int({}, "N", 7) == 7 and env_float({"X": "  "}, "X", 1.5) == 1.5 and env_flag({}, "F", True) is True


def test_values_parse():
    assert env_int({"N": " 12 "}, "N", 0) == 12 and env_int({"N": "-1"}, "N", 0, minimum=-1) == -1
    assert env_float({"X": "2.5"}, "X", 0.0) == 2.5
    assert [env_flag({"F": v}, "F", False) for v in ("1", "TRUE", "yes", "on")] == [True] * 4
    assert [env_flag({"F": v}, "F", True) for v in ("0", "false", "No", "off")] == [False] * 4


@pytest.mark.parametrize(("read", "message"), [
    (lambda: env_int({"N": "ten"}, "N", 0), "N='ten' is not an integer"),
    (lambda: env_int({"N": "0"}, "N", 0, minimum=1), "N=0 must be >= 1"),
    (lambda: env_float({"X": "soon"}, "X", 0.0), "X='soon' is not a number"),
    (lambda: env_float({"X": "-1"}, "X", 0.0), "X=-1 must be a finite number >= 0"),
    (lambda: env_float({"X": "nan"}, "X", 0.0), "X=nan must be a finite number >= 0"),
    (lambda: env_float({"X": "inf"}, "X", 0.0), "X=inf must be a finite number >= 0"),
    (lambda: env_flag({"F": "maybe"}, "F", False), "F must be true or false, got 'maybe'"),
])
def test_bad_values_name_the_variable(read, message):
    with pytest.raises(ValueError) as err:
        read()
    assert str(err.value) == message
