"""Typed access to the ctsynth services from Python."""

from ctsynth.client.connection import connect, open_channel
from ctsynth.client.sampling import Sample, SamplingClient

__all__ = ["Sample", "SamplingClient", "connect", "open_channel"]
