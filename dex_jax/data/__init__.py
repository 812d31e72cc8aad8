"""Datasets: the procedural SynthHeads renderer, dataset builders, input pipelines and augmentations."""
