"""What a mask-conditioned model is asked to draw: nodule layouts, masks a
client sends, and plausible layouts drawn from the real annotations."""
