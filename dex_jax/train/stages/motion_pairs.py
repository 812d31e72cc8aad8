"""A Stage-1 batch (B examples, each one source and K driving frames) as the B*K flat pairs a step trains on.

Row i of the B*K rows is driving frame i % K of source i // K, as `MotionGenerator.reenact` expects.
"""

import jax.numpy as jnp

POSE_TARGETS = ("source_pose", "driving_pose")


def flatten_frames(x):
    """(B, K, ...) -> (B*K, ...)."""
    return x.reshape((-1,) + x.shape[2:])


def flatten_pairs(batch):
    """Batch -> (source (B), pose input, expression input, target, face mask (B*K each))."""
    return (batch["source"], flatten_frames(batch["pose_input"]), flatten_frames(batch["expression_input"]),
            flatten_frames(batch["driving"]), flatten_frames(batch["face_mask"]))


def flatten_pose_targets(batch):
    """Ground-truth (source pose, driving pose), (B*K, 6) each, aligned with `flatten_pairs`; ValueError if absent."""
    missing = [key for key in POSE_TARGETS if key not in batch]
    if missing:
        raise ValueError(f"loss.pose_supervision > 0 needs ground-truth poses in the batches, and these have no "
                         f"{', '.join(missing)}: use a dataset that records poses (synth_heads) or set it to 0")
    k = batch["driving"].shape[1]
    return jnp.repeat(batch["source_pose"], k, axis=0), flatten_frames(batch["driving_pose"])


def flatten_expression_targets(batch):
    """Ground-truth driving expressions (B*K, n), aligned with `flatten_pairs`; ValueError if absent."""
    if "driving_expression" not in batch:
        raise ValueError("expression supervision (loss.expression_supervision > 0, or stage expression) needs "
                         "ground-truth expressions in the batches, and these have no driving_expression: use a "
                         "dataset that records them (synth_heads)")
    return flatten_frames(batch["driving_expression"])
