"""Typed access to the ctsynth services from Python."""

from ctsynth.client.connection import connect, open_channel

__all__ = ["connect", "open_channel"]
