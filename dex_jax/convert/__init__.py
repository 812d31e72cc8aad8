"""PyTorch -> Flax weight import for the pieces users initialise from public checkpoints."""
