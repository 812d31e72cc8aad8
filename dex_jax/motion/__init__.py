"""Stage 1: the motion trainer (appearance, pose and expression encoders, warp, decoder, discriminator, losses)."""
