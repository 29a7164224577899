"""Typed access to the ctsynth services from Python."""

from ctsynth.client.connection import open_channel, resolve_target
from ctsynth.client.health import service_health
from ctsynth.client.sampling import Sample, SamplingClient

__all__ = ["Sample", "SamplingClient", "open_channel", "resolve_target", "service_health"]
