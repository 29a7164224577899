"""Tests of ctsynth.models."""
