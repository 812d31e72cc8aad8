"""Inference: animate portraits with a trained checkpoint."""
