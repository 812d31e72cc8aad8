"""SynthHeads identities: head shape (a union of ellipsoids), colours, face layout and background, from a seed.

Canonical head space follows `dex_jax.geometry`: x -> image right, y -> image down, z away from the
camera. The head is centred at the origin and faces -z (toward the camera). "Left" and "right" are the
subject's own: the subject's left is +x (image right in a frontal view). The model is built in head units;
one head unit is HEAD_UNIT canonical units, so at pose scale 1 the face spans about half the image width.
The neck and torso live in a body frame with the head's origin that does not turn with the head.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

HEAD_UNIT = 1.5
PART_NAMES = ("skull", "face", "nose_bridge", "nose_tip", "nose_wing_left", "nose_wing_right",
              "ear_left", "ear_right", "hair", "hair_back", "neck", "torso")
PART = {name: index for index, name in enumerate(PART_NAMES)}
HEAD_PARTS = tuple(range(PART["hair_back"] + 1))
SKIN_PARTS = tuple(range(PART["ear_right"] + 1))
HAIR_PARTS = (PART["hair"], PART["hair_back"])
BODY_PARTS = (PART["neck"], PART["torso"])
FACE_PARTS = tuple(PART[name] for name in PART_NAMES[:6])

SKIN_TONES = np.array([[0.97, 0.82, 0.71], [0.86, 0.66, 0.52], [0.70, 0.50, 0.36],
                       [0.50, 0.34, 0.24], [0.32, 0.21, 0.15]])
HAIR_COLOURS = np.array([[0.05, 0.04, 0.04], [0.20, 0.12, 0.07], [0.38, 0.24, 0.13], [0.78, 0.62, 0.38],
                         [0.55, 0.22, 0.09], [0.62, 0.62, 0.63], [0.18, 0.22, 0.55]])
HAIR_WEIGHTS = np.array([0.25, 0.25, 0.17, 0.12, 0.08, 0.08, 0.05])
IRIS_COLOURS = np.array([[0.33, 0.19, 0.09], [0.16, 0.09, 0.05], [0.28, 0.48, 0.75],
                         [0.32, 0.52, 0.28], [0.48, 0.38, 0.18], [0.48, 0.54, 0.60]])
BACKGROUND_KINDS = ("gradient", "stripes", "noise")
_NUM_DRAWS = 96


def _surface_z(centre, radii, x, y):
    """Front (smallest z) surface point of an axis-aligned ellipsoid at canonical (x, y)."""
    inside = 1.0 - ((x - centre[0]) / radii[0]) ** 2 - ((y - centre[1]) / radii[1]) ** 2
    return centre[2] - radii[2] * jnp.sqrt(jnp.maximum(inside, 0.0))


def _mix_palette(palette, t):
    """Piecewise-linear colour along the rows of `palette` for t in [0, 1]."""
    palette = jnp.asarray(palette)
    position = t * (palette.shape[0] - 1)
    low = jnp.clip(jnp.floor(position).astype(jnp.int32), 0, palette.shape[0] - 2)
    frac = position - low
    return palette[low] * (1 - frac) + palette[low + 1] * frac


def sample_identity(key):
    """A dict of arrays describing one identity (fixed structure, so identities stack and vmap)."""
    draws = iter(jax.random.uniform(key, (_NUM_DRAWS,)))

    def uniform(low, high, shape=()):
        size = math.prod(shape)
        values = jnp.stack([next(draws) for _ in range(size)]).reshape(shape)
        return low + (high - low) * values

    def chance(p):
        return (next(draws) < p).astype(jnp.float32)

    def pick(weights):
        return jnp.searchsorted(jnp.cumsum(weights) / jnp.sum(weights), next(draws))

    # --- shape: ellipsoid centres and radii ---
    head_w, head_h, head_d = uniform(0.33, 0.38), uniform(0.40, 0.45), uniform(0.40, 0.45)
    skull_c, skull_r = jnp.array([0.0, -0.13, 0.05]), jnp.stack([head_w, head_h, head_d])
    face_c = jnp.stack([0.0, uniform(0.05, 0.09), -0.02])
    face_r = jnp.stack([uniform(0.25, 0.31), uniform(0.32, 0.38), uniform(0.33, 0.37)])
    nose_length, nose_width, nose_depth = uniform(0.85, 1.2), uniform(0.85, 1.3), uniform(0.8, 1.2)
    bridge_r = jnp.stack([0.045 * nose_width, 0.095 * nose_length, 0.05 * nose_depth])
    bridge_y = 0.04 + 0.02 * (nose_length - 1)
    bridge_z = _surface_z(face_c, face_r, 0.0, bridge_y) - 0.035 * nose_depth + bridge_r[2]
    tip_y = bridge_y + 0.09 * nose_length
    tip_r = jnp.stack([0.04 * nose_width, 0.036 * nose_length, 0.045 * nose_depth])
    tip_z = _surface_z(face_c, face_r, 0.0, tip_y) - 0.065 * nose_depth + tip_r[2]
    wing_x, wing_y = 0.036 * nose_width, tip_y + 0.012
    wing_r = jnp.stack([0.026 * nose_width, 0.024, 0.03])
    wing_z = _surface_z(face_c, face_r, wing_x, wing_y) - 0.024 * nose_depth + wing_r[2]
    ear_size = uniform(0.85, 1.15)
    ear_r = jnp.stack([0.035, 0.09 * ear_size, 0.06 * ear_size])
    ear_x, ear_y = head_w - 0.01, uniform(-0.03, 0.02)
    neck_width = uniform(0.85, 1.1)
    hair_thickness = uniform(0.015, 0.07)
    hair_r = skull_r + hair_thickness * jnp.array([0.75, 1.0, 1.0])
    long_hair = chance(0.4)
    hair_back_r = jnp.stack([head_w + 0.5 * hair_thickness + uniform(-0.03, 0.03), uniform(0.32, 0.45), 0.22])

    centres = jnp.stack([
        skull_c, face_c, jnp.stack([0.0, bridge_y, bridge_z]), jnp.stack([0.0, tip_y, tip_z]),
        jnp.stack([wing_x, wing_y, wing_z]), jnp.stack([-wing_x, wing_y, wing_z]),
        jnp.stack([ear_x, ear_y, 0.06]), jnp.stack([-ear_x, ear_y, 0.06]),
        skull_c + jnp.array([0.0, -0.015, 0.01]),
        jnp.stack([0.0, 0.12 + 0.5 * hair_back_r[1], 0.14]),
        jnp.array([0.0, 0.55, 0.1]),
        jnp.stack([0.0, uniform(1.0, 1.1), 0.15]),
    ])
    radii = jnp.stack([
        skull_r, face_r, bridge_r, tip_r, wing_r, wing_r, ear_r, ear_r, hair_r, hair_back_r,
        jnp.stack([0.15 * neck_width, 0.45, 0.16 * neck_width]),
        jnp.stack([uniform(0.6, 0.75), 0.45, uniform(0.25, 0.32)]),
    ])

    # --- colours ---
    skin = _mix_palette(SKIN_TONES, uniform(0.0, 1.0)) * (1 + uniform(-0.04, 0.04, (3,)))
    hair_colour = jnp.asarray(HAIR_COLOURS)[pick(HAIR_WEIGHTS)]
    hair_colour = jnp.clip(hair_colour * uniform(0.85, 1.15) + uniform(-0.03, 0.03, (3,)), 0.02, 1.0)
    iris = jnp.asarray(IRIS_COLOURS)[pick(jnp.ones(IRIS_COLOURS.shape[0]))]
    lips = skin * jnp.array([0.78, 0.45, 0.48]) + jnp.array([0.16, 0.02, 0.05]) * uniform(0.6, 1.4)
    bald = chance(0.08)

    return {
        "centres": centres,
        "radii": radii,
        "skin": jnp.clip(skin, 0.0, 1.0),
        "lips": jnp.clip(lips, 0.0, 1.0),
        "hair_colour": hair_colour,
        "brow_colour": hair_colour * 0.55 + skin * 0.08,
        "iris": iris * uniform(0.85, 1.15),
        "clothes": uniform(0.05, 0.9, (3,)),
        # hair coverage on the hair shell, as heights on its unit sphere (y down): front, side, back
        "hairline": jnp.stack([uniform(-0.7, -0.45) - bald, uniform(-0.05, 0.35) - 2 * bald,
                               uniform(0.3, 0.75) - 3 * bald]),
        "fringe": chance(0.35) * uniform(0.15, 0.45),
        "hair_part": uniform(-0.25, 0.25),
        "long_hair": long_hair * (1 - bald),
        "strand_freq": uniform(30.0, 70.0),
        # face layout (canonical x, y of the painted features; see synth_face)
        "eye_x": uniform(0.115, 0.14), "eye_y": uniform(-0.065, -0.03),
        "eye_w": uniform(0.052, 0.064), "eye_h": uniform(0.022, 0.029),
        "iris_r": uniform(0.40, 0.46),
        "brow_gap": uniform(0.058, 0.075), "brow_thick": uniform(0.009, 0.016),
        "brow_arch": uniform(0.005, 0.02), "brow_len": uniform(1.1, 1.3),
        "mouth_y": tip_y + uniform(0.095, 0.12), "mouth_w": uniform(0.085, 0.11),
        "lip_upper": uniform(0.012, 0.018), "lip_lower": uniform(0.016, 0.024),
        "nose_tip_y": tip_y, "nostril_y": tip_y + 0.6 * tip_r[1], "nostril_x": 0.5 * tip_r[0],
        # background, in image space
        "bg_a": uniform(0.05, 0.95, (3,)), "bg_b": uniform(0.05, 0.95, (3,)),
        "bg_kind": pick(jnp.ones(len(BACKGROUND_KINDS))),
        "bg_angle": uniform(0.0, jnp.pi), "bg_freq": uniform(6.0, 24.0), "bg_phase": uniform(0.0, 2 * jnp.pi),
        "bg_waves": uniform(-6.0, 6.0, (4, 2)), "bg_wave_phase": uniform(0.0, 2 * jnp.pi, (4,)),
    }


def identity_params(identity_id, seed=0):
    """The identity numbered `identity_id` of the dataset `seed` (a pure function of both)."""
    return sample_identity(jax.random.fold_in(jax.random.key(seed), identity_id))
