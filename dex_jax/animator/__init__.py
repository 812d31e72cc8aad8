"""Stage 2: the DeX animator (reference UNet, ray-map input, warped reference features, expression tokens)."""
