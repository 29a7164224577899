"""Training: checkpoints, the per-worker loop, the Ray Train driver and the
model registry entries it produces."""
