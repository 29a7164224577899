"""Admission control: slots and bytes, refused with the limit in the message."""

from __future__ import annotations

import pytest

from ctsynth.errors import ResourceExhausted
from ctsynth.sampling.limits import Limiter


def test_concurrency_limit_refuses_and_frees():
    limiter = Limiter(max_concurrent=2, max_bytes=100)
    with limiter.admit(10), limiter.admit(10):
        assert (limiter.active, limiter.bytes) == (2, 20)
        with pytest.raises(ResourceExhausted, match="limit is 2"):
            with limiter.admit(10):
                pass
    assert (limiter.active, limiter.bytes) == (0, 0)
    with limiter.admit(10):
        assert limiter.active == 1


def test_byte_limit_refuses_what_would_not_fit():
    limiter = Limiter(max_concurrent=10, max_bytes=100)
    with pytest.raises(ResourceExhausted, match="limit of 100"):
        with limiter.admit(101):
            pass
    with limiter.admit(60):
        with pytest.raises(ResourceExhausted, match="60 bytes are in flight"):
            with limiter.admit(50):
                pass
    assert limiter.bytes == 0


def test_slot_is_freed_when_the_block_raises():
    limiter = Limiter(max_concurrent=1, max_bytes=100)
    with pytest.raises(KeyError):
        with limiter.admit(5):
            raise KeyError("boom")
    assert (limiter.active, limiter.bytes) == (0, 0)
