"""Training: one loop shared by every stage (mesh, input, init, step, checkpoints, metrics) and the stages."""
