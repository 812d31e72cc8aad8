"""Shared neural-network layers used by the motion trainer and the diffusion animator."""
