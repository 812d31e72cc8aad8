"""SynthHeads face features: expression-driven curves of lids, brows and lips, painted as a texture and as landmarks.

Every feature is a function of the canonical (x, y) of a surface point on the front of the head, so the
expression changes only colours, never the head's geometry (its outline is expression-independent). The
same curves give the 2D layout of the landmarks, whose depth is then found on the surface by the renderer.
Features are drawn in mirrored coordinates xm = |x|; the subject's left side is x > 0. Coordinates here are
head units (canonical / synth_identity.HEAD_UNIT).
"""

import jax.numpy as jnp

EXPRESSION_NAMES = ("jaw_open", "smile_left", "smile_right", "eye_close_left", "eye_close_right",
                    "brow_raise", "brow_furrow", "lip_pucker", "tongue_out", "gaze_x", "gaze_y")
EXPRESSION = {name: index for index, name in enumerate(EXPRESSION_NAMES)}
SIGNED_EXPRESSIONS = ("gaze_x", "gaze_y")
NUM_EXPRESSIONS = len(EXPRESSION_NAMES)

_EYE_U = (-1.0, -0.5, 0.0, 0.5, 1.0, 0.5, 0.0, -0.5)
_EYE_UPPER = (False, True, True, True, False, False, False, False)
_BROW_U = (-1.0, -0.5, 0.0, 0.5, 1.0)
_MOUTH_OUTER_U = (-1.0, -0.6, -0.3, 0.0, 0.3, 0.6, 1.0, 0.6, 0.3, 0.0, -0.3, -0.6)
_MOUTH_INNER_U = (-0.95, -0.5, 0.0, 0.5, 0.95, 0.5, 0.0, -0.5)
LANDMARK_GROUPS = {
    "left_eye": range(0, 8), "right_eye": range(8, 16), "left_brow": range(16, 21), "right_brow": range(21, 26),
    "mouth_outer": range(26, 38), "mouth_inner": range(38, 46), "nose_tip": range(46, 47),
    "left_iris": range(47, 48), "right_iris": range(48, 49),
}
NUM_LANDMARKS = 49
# The masked face regions (`dex_jax.face.regions.MASKED_REGIONS`) in this landmark scheme.
REGIONS = {
    "left_eye": list(LANDMARK_GROUPS["left_eye"]) + list(LANDMARK_GROUPS["left_iris"]),
    "right_eye": list(LANDMARK_GROUPS["right_eye"]) + list(LANDMARK_GROUPS["right_iris"]),
    "mouth": list(LANDMARK_GROUPS["mouth_outer"]) + list(LANDMARK_GROUPS["mouth_inner"]),
}

_SCLERA = (0.94, 0.93, 0.90)
_PUPIL = (0.02, 0.02, 0.03)
_LASH = (0.07, 0.05, 0.05)
_MOUTH_INSIDE = (0.30, 0.06, 0.07)
_TEETH = (0.94, 0.92, 0.86)
_TONGUE = (0.86, 0.38, 0.42)


def bump(t):
    """A smooth compact bump: (1 - t^2)^2 for |t| < 1, else 0 (cheaper per pixel than a Gaussian)."""
    t = jnp.maximum(1.0 - t * t, 0.0)
    return t * t


def _edge(distance, px):
    """Anti-aliased coverage of a region given a signed distance (negative inside), px = one pixel."""
    return jnp.clip(0.5 - distance / px, 0.0, 1.0)


def rgb(colour):
    """A colour as a tuple of three channels (arrays of one shape, or scalars): keeps all pixel work one shape."""
    return tuple(colour[i] for i in range(3))


def mul(colour, factor):
    factor = rgb(factor) if isinstance(factor, tuple) else (factor,) * 3
    return tuple(c * f for c, f in zip(colour, factor))


def _over(colour, paint, alpha):
    return tuple(c + alpha * (p - c) for c, p in zip(colour, paint))


def _side(x, left, right):
    return jnp.where(x >= 0, left, right)


def eye_lids(u, closure, smile, ident):
    """Canonical y of the upper and lower lid at eye coordinate u (-1 inner corner, +1 outer corner)."""
    bulge = jnp.maximum(1.0 - u * u, 0.0)
    centre = ident["eye_y"] - 0.2 * ident["eye_h"] * u
    lower = centre + ident["eye_h"] * (0.75 - 0.3 * smile) * bulge
    opened = centre - ident["eye_h"] * (1.0 - 0.12 * u) * bulge
    return opened + closure * (lower - opened), lower


def _brow_x(u, furrow, ident):
    length = ident["brow_len"] * ident["eye_w"]
    return ident["eye_x"] + 0.005 + u * length - 0.012 * furrow * (1.0 - u) / 2


def brow_line(u, brow_raise, furrow, ident):
    """Canonical y of the brow centre line at brow coordinate u (-1 inner end, +1 outer end)."""
    inner = (1.0 - u) / 2
    return (ident["eye_y"] - ident["brow_gap"] - ident["brow_arch"] * (1.0 - u * u)
            - brow_raise * (0.034 + 0.014 * inner) + furrow * 0.02 * inner)


def mouth_half_width(smile, pucker, jaw, ident):
    return ident["mouth_w"] * (1.0 - 0.35 * pucker + 0.22 * smile - 0.1 * jaw)


def mouth_curves(u, smile, mean_smile, jaw, pucker, ident):
    """(mid, opening top, opening bottom, upper lip top, lower lip bottom) at mouth coordinate u in [-1, 1]."""
    bulge = jnp.sqrt(jnp.maximum(1.0 - u * u, 0.0))
    mid = ident["mouth_y"] - 0.045 * smile * u * u
    height = 0.07 * jaw * bulge
    top, bottom = mid - 0.25 * height, mid + 0.75 * height
    thick = (1.0 + 0.7 * pucker - 0.3 * mean_smile) * (0.15 + 0.85 * bulge)
    cupid = 1.0 - 0.3 * bump(u / 0.22)
    return mid, top, bottom, top - ident["lip_upper"] * thick * cupid, bottom + ident["lip_lower"] * thick


def _iris_centre(sign, gaze_x, gaze_y, ident):
    """Canonical (x, y) of the iris centre; sign is +1 for the left eye, -1 for the right."""
    x = sign * ident["eye_x"] + gaze_x * 0.45 * ident["eye_w"]
    return x, ident["eye_y"] + (0.5 * gaze_y - 0.1) * ident["eye_h"]


def landmarks_xy(ident, expr):
    """Canonical (x, y) of the NUM_LANDMARKS landmarks, shape (NUM_LANDMARKS, 2); see LANDMARK_GROUPS."""
    e = {name: expr[index] for name, index in EXPRESSION.items()}
    mean_smile = 0.5 * (e["smile_left"] + e["smile_right"])
    points = []
    for sign, side in ((1.0, "left"), (-1.0, "right")):
        u = jnp.array(_EYE_U)
        upper, lower = eye_lids(u, e[f"eye_close_{side}"], e[f"smile_{side}"], ident)
        y = jnp.where(jnp.array(_EYE_UPPER), upper, lower)
        points.append(jnp.stack([sign * (ident["eye_x"] + u * ident["eye_w"]), y], -1))
    for sign in (1.0, -1.0):
        u = jnp.array(_BROW_U)
        y = brow_line(u, e["brow_raise"], e["brow_furrow"], ident)
        points.append(jnp.stack([sign * _brow_x(u, e["brow_furrow"], ident), y], -1))
    for us, inner in ((_MOUTH_OUTER_U, False), (_MOUTH_INNER_U, True)):
        u = jnp.array(us)
        upper = jnp.arange(len(us)) < len(us) // 2  # the first half: a corner, then the upper lip
        smile = _side(u, e["smile_left"], e["smile_right"])
        mid, top, bottom, lip_top, lip_bottom = mouth_curves(
            u, smile, mean_smile, e["jaw_open"], e["lip_pucker"], ident)
        y_upper, y_lower = (top, bottom) if inner else (lip_top, lip_bottom)
        y = jnp.where(jnp.abs(u) > 0.9, mid, jnp.where(upper, y_upper, y_lower))
        half = mouth_half_width(smile, e["lip_pucker"], e["jaw_open"], ident)
        points.append(jnp.stack([u * half, y], -1))
    points.append(jnp.stack([0.0, ident["nose_tip_y"]])[None])
    for sign in (1.0, -1.0):
        points.append(jnp.stack(_iris_centre(sign, e["gaze_x"], e["gaze_y"], ident))[None])
    return jnp.concatenate(points, 0)


def _paint_eyes(colour, xm, y, sign, closure, smile, e, ident, px):
    u = (xm - ident["eye_x"]) / ident["eye_w"]
    bulge = jnp.maximum(1.0 - u * u, 0.0)
    upper, lower = eye_lids(u, closure, smile, ident)
    across = (jnp.abs(u) - 1.0) * ident["eye_w"]
    iris_x, iris_y = _iris_centre(sign, e["gaze_x"], e["gaze_y"], ident)
    iris_x = sign * iris_x
    radius = ident["iris_r"] * ident["eye_w"]
    dist = jnp.sqrt((xm - iris_x) ** 2 + (y - iris_y) ** 2)
    ring = 1.0 - 0.55 * jnp.clip((dist / radius - 0.75) / 0.25, 0.0, 1.0)
    ball = mul(_SCLERA, 0.78 + 0.22 * bulge)
    ball = _over(ball, mul(rgb(ident["iris"]), (1.25 - 0.45 * dist / radius) * ring), _edge(dist - radius, px))
    ball = _over(ball, _PUPIL, _edge(dist - 0.42 * radius, px))
    glint = jnp.sqrt((xm - iris_x + sign * 0.35 * radius) ** 2 + (y - iris_y + 0.35 * radius) ** 2)
    ball = _over(ball, (1.0, 1.0, 1.0), 0.9 * _edge(glint - 0.16 * radius, px))
    ball = mul(ball, 1.0 - 0.35 * jnp.clip(1.0 - (y - upper) / (0.9 * ident["eye_h"]), 0.0, 1.0))
    colour = _over(colour, ball, _edge(jnp.maximum(jnp.maximum(upper - y, y - lower), across), px))
    crease = ident["eye_y"] - 0.2 * ident["eye_h"] * u - ident["eye_h"] * (0.35 + 1.45 * bulge)
    crease_alpha = 0.45 * _edge(jnp.abs(y - crease) - 0.0012, px) * _edge((jnp.abs(u) - 0.85) * ident["eye_w"], px)
    colour = mul(colour, 1.0 - 0.4 * crease_alpha - 0.16 * _edge(jnp.abs(y - lower) - 0.001, px) * _edge(across, px))
    lash = 0.0028 + 0.0025 * jnp.clip(u, 0.0, 1.0)
    return _over(colour, _LASH, 0.95 * _edge(jnp.abs(y - upper) - lash, px) * _edge(across - 0.004, px))


def _paint_brows(colour, xm, y, e, ident, px):
    furrow = e["brow_furrow"]
    length = ident["brow_len"] * ident["eye_w"] + 0.006 * furrow
    u = (xm - (ident["eye_x"] + 0.005 - 0.006 * furrow)) / length
    uc = jnp.clip(u, -1.0, 1.0)
    centre = brow_line(uc, e["brow_raise"], furrow, ident)
    thick = ident["brow_thick"] * (1.15 - 0.45 * (uc + 1.0) / 2)
    dist = jnp.maximum(jnp.abs(y - centre) - thick, (jnp.abs(u) - 1.0) * length)
    return _over(colour, rgb(ident["brow_colour"]), 0.93 * _edge(dist, px))


def _paint_mouth(colour, xm, y, smile, mean_smile, e, ident, px):
    jaw, pucker, tongue = e["jaw_open"], e["lip_pucker"], e["tongue_out"]
    half = mouth_half_width(smile, pucker, jaw, ident)
    u = xm / half
    mid, top, bottom, lip_top, lip_bottom = mouth_curves(u, smile, mean_smile, jaw, pucker, ident)
    across = (u - 1.0) * half
    lips = rgb(ident["lips"])
    colour = _over(colour, mul(lips, 1.0 + 0.12 * bump((y - bottom - 0.5 * (lip_bottom - bottom)) / 0.012)),
                   _edge(jnp.maximum(jnp.maximum(bottom - y, y - lip_bottom), across), px))
    tongue_inside = (jnp.sqrt((u / 0.65) ** 2 + ((y - bottom) / 0.02) ** 2) - 1.0) * 0.02
    inside = _over(_MOUTH_INSIDE, mul(_TONGUE, 0.8), _edge(tongue_inside, px))
    inside = _over(inside, _TEETH, _edge(jnp.maximum(y - top - 0.014, (u - 0.8) * half), px))
    inside = _over(inside, mul(_TEETH, 0.85), _edge(jnp.maximum(bottom - 0.008 - y, (u - 0.6) * half), px))
    colour = _over(colour, inside, _edge(jnp.maximum(jnp.maximum(top - y, y - bottom), across), px))
    rx, ry = 0.033 + 0.008 * tongue, 0.008 + 0.03 * tongue
    centre = bottom + 0.032 * tongue - 0.004
    tongue_dist = jnp.maximum((jnp.sqrt((xm / rx) ** 2 + ((y - centre) / ry) ** 2) - 1.0) * ry, top - y)
    tongue_alpha = jnp.clip(tongue / 0.12, 0.0, 1.0) * _edge(tongue_dist, px)
    colour = _over(colour, mul(_TONGUE, 1.0 - 0.2 * bump(xm / 0.007)), tongue_alpha)
    colour = _over(colour, mul(lips, 0.88), _edge(jnp.maximum(jnp.maximum(lip_top - y, y - top), across), px))
    lip_line = 0.8 * (1.0 - tongue_alpha) * _edge(jnp.abs(y - mid) - 0.0016, px) * _edge(across, px)
    return _over(colour, mul(lips, 0.4), lip_line)


def _skin_shadows(xm, y, smile, e, ident, px):
    """Darkening of the skin: eye sockets, nostrils, smile folds, forehead wrinkles, frown lines."""
    socket = (((xm - ident["eye_x"]) / (1.7 * ident["eye_w"])) ** 2
              + ((y - ident["eye_y"] + 0.5 * ident["eye_h"]) / (3.4 * ident["eye_h"])) ** 2)
    shadow = 0.13 * jnp.clip(1.0 - socket, 0.0, 1.0)
    nostril = jnp.sqrt(((xm - ident["nostril_x"]) / 0.011) ** 2 + ((y - ident["nostril_y"]) / 0.006) ** 2)
    shadow = shadow + 0.5 * _edge((nostril - 1.0) * 0.006, px)
    half = mouth_half_width(smile, e["lip_pucker"], e["jaw_open"], ident)
    y0, y1 = ident["nostril_y"] - 0.01, ident["mouth_y"] - 0.045 * smile + 0.018
    x0, x1 = ident["nostril_x"] + 0.04, half + 0.018
    t = (y - y0) / (y1 - y0)
    fold_x = x0 + (x1 - x0) * t + 0.02 * t * (1.0 - t)
    fold = _edge(jnp.abs(xm - fold_x) - 0.0015 - 0.002 * smile, px) * _edge((jnp.abs(t - 0.5) - 0.5) * (y1 - y0), px)
    shadow = shadow + (0.06 + 0.32 * smile) * fold
    raise_ = e["brow_raise"]
    base = ident["eye_y"] - ident["brow_gap"] - 0.055
    for k in range(3):
        line = base - 0.026 * k - 0.016 * raise_ + 0.6 * xm * xm
        shadow = shadow + 0.35 * raise_ * _edge(jnp.abs(y - line) - 0.0014, px) * jnp.clip((0.17 - xm) / 0.04, 0.0, 1.0)
    inner = brow_line(-1.0, raise_, e["brow_furrow"], ident)
    frown = (_edge(jnp.abs(xm - 0.02) - 0.0012 - 0.0012 * e["brow_furrow"], px)
             * _edge(jnp.abs(y - inner - 0.004) - 0.022, px))
    return shadow + 0.45 * e["brow_furrow"] * frown


def paint_face(x, y, ident, expr, px):
    """Albedo (r, g, b tuple of arrays) of the face at head-unit (x, y): skin with eyes, brows, mouth, wrinkles.

    px is one pixel in canonical units (for anti-aliased edges).
    """
    e = {name: expr[index] for name, index in EXPRESSION.items()}
    left = x >= 0
    sign = jnp.where(left, 1.0, -1.0)
    xm = jnp.abs(x)
    smile = jnp.where(left, e["smile_left"], e["smile_right"])
    closure = jnp.where(left, e["eye_close_left"], e["eye_close_right"])
    mean_smile = 0.5 * (e["smile_left"] + e["smile_right"])
    skin = rgb(ident["skin"])
    cheek = ((xm - 0.13) / 0.08) ** 2 + ((y - ident["mouth_y"] + 0.085 + 0.02 * smile) / 0.06) ** 2
    colour = _over(skin, mul(skin, (1.03, 0.86, 0.84)), (0.25 + 0.25 * smile) * jnp.maximum(1.0 - cheek, 0.0) ** 2)
    colour = mul(colour, 1.0 - _skin_shadows(xm, y, smile, e, ident, px))
    colour = _paint_eyes(colour, xm, y, sign, closure, smile, e, ident, px)
    colour = _paint_brows(colour, xm, y, e, ident, px)
    return _paint_mouth(colour, xm, y, smile, mean_smile, e, ident, px)
