"""Synthetic batches from registered models, as the sampling service serves them.

`engine` runs a request (validate, admit, stream pieces); `cache` keeps
loaded models; `batcher` merges concurrent requests into shared forward
passes; `seeds` makes every item a function of its own seed; `formats`
encodes items (float16, HU, PNG, DICOM, NIfTI); `limits` bounds concurrency
and memory; `settings` reads CTSYNTH_SAMPLING_*; `utilization` feeds the
device gauge. Nothing here imports gRPC.
"""
