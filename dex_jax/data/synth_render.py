"""SynthHeads renderer: orthographic ray casting of a posed union of ellipsoids, painted face, Lambert shading.

For the pixel centre (x, y) the camera ray is X_cam(z) = (x, y, z), z growing away from the camera. Under the
pose P = [sR | t] it is the canonical line X(z) = R^T((x, y, 0) - t) / s + z R^T e_z / s, intersected
analytically with every ellipsoid of the head; the smallest z wins (ray parameters are camera depths). The
neck and torso are cast the same way under the body pose. Features are painted as a function of the
canonical hit point, so expressions never move the outline. All per-pixel work keeps one array shape (colours
are tuples of channels) so that XLA fuses it into a few loops.
"""

import jax.numpy as jnp

from dex_jax.data.synth_face import bump, landmarks_xy, mul, paint_face, rgb
from dex_jax.data.synth_identity import BODY_PARTS, FACE_PARTS, HAIR_PARTS, HEAD_PARTS, HEAD_UNIT, PART, SKIN_PARTS
from dex_jax.geometry import rotation_from_euler

LIGHT = (-0.35, -0.45, -0.82)
AMBIENT = 0.38
FACE_DEPTH_LIMIT = 0.0
NORMAL_BLEND = 0.35


def _normalize(v):
    v = jnp.asarray(v, jnp.float32)
    return v / jnp.linalg.norm(v)


def _smooth(t):
    t = jnp.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def hair_present(q, ident):
    """Whether hair covers the hair shell at q, a point on its unit sphere (tuple of x, y, z arrays)."""
    front = -q[2]
    to_front = _smooth((front - 0.25) / 0.5)
    to_back = _smooth((-front - 0.1) / 0.5)
    fringe = ident["fringe"] * jnp.clip(1.0 - (q[0] / 0.6) ** 2, 0.0, 1.0)
    front_line = ident["hairline"][0] + fringe + ident["hair_part"] * q[0]
    side_line = ident["hairline"][1]
    line = side_line + to_front * (front_line - side_line) + to_back * (ident["hairline"][2] - side_line)
    return q[1] < line


def _hair_back_present(point, ident):
    return (point[2] > 0.02) & (ident["long_hair"] > 0.5)


def cast(origin, direction, ident, parts=HEAD_PARTS):
    """First hit of the lines origin + z * direction with the given parts (head units).

    origin is a tuple of three arrays of one shape, direction a (3,) vector shared by all lines.
    Returns (z, part): the smallest hit parameter (inf where nothing is hit) and the index of the part hit
    (-1 for none). Hair is a shell over the skull where `hair_present`; where its near side is bare, its far
    (inner) side can be seen.
    """
    shape = jnp.broadcast_shapes(*(jnp.shape(o) for o in origin))
    z_best = jnp.full(shape, jnp.inf)
    part_best = jnp.full(shape, -1, jnp.int32)
    for k in parts:
        centre, radii = ident["centres"][k], ident["radii"][k]
        a = [(origin[i] - centre[i]) / radii[i] for i in range(3)]
        b = [direction[i] / radii[i] for i in range(3)]
        qa = b[0] * b[0] + b[1] * b[1] + b[2] * b[2]
        qb = a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
        qc = a[0] * a[0] + a[1] * a[1] + a[2] * a[2] - 1.0
        disc = qb * qb - qa * qc
        root = jnp.sqrt(jnp.maximum(disc, 0.0))
        near = (-qb - root) / qa
        if k in HAIR_PARTS:
            far = (-qb + root) / qa
            if k == PART["hair"]:
                ok_near = hair_present([a[i] + near * b[i] for i in range(3)], ident)
                ok_far = hair_present([a[i] + far * b[i] for i in range(3)], ident)
            else:
                ok_near = _hair_back_present([origin[i] + near * direction[i] for i in range(3)], ident)
                ok_far = _hair_back_present([origin[i] + far * direction[i] for i in range(3)], ident)
            ok_near = (disc > 0) & ok_near
            z = jnp.where(ok_near, near, jnp.where((disc > 0) & ok_far, far, jnp.inf))
        else:
            z = jnp.where(disc > 0, near, jnp.inf)
        better = z < z_best
        z_best = jnp.where(better, z, z_best)
        part_best = jnp.where(better, k, part_best)
    return z_best, part_best


def _plane_wave(x, y, kx, ky, phase):
    """sin(kx x + ky y + phase) on the grid of the 1D coordinates x (W,) and y (H,), via separable factors."""
    sx, cx = jnp.sin(kx * x + phase), jnp.cos(kx * x + phase)
    sy, cy = jnp.sin(ky * y), jnp.cos(ky * y)
    return sx[None, :] * cy[:, None] + cx[None, :] * sy[:, None]


def background(x, y, ident):
    """Image-space background (tuple of three (H, W) channels): gradient, stripes or smooth noise of two colours."""
    c, s = jnp.cos(ident["bg_angle"]), jnp.sin(ident["bg_angle"])
    gradient = 0.5 + 0.35 * (c * x[None, :] + s * y[:, None])
    freq = ident["bg_freq"]
    stripes = jnp.clip(0.5 + 1.5 * _plane_wave(x, y, freq * c, freq * s, ident["bg_phase"]), 0.0, 1.0)
    waves = ident["bg_waves"]
    noise = 0.5 + 0.16 * sum(_plane_wave(x, y, waves[j, 0], waves[j, 1], ident["bg_wave_phase"][j]) for j in range(4))
    kind = ident["bg_kind"]
    t = jnp.where(kind == 0, gradient, jnp.where(kind == 1, stripes, noise))
    return tuple(a + t * (b - a) for a, b in zip(rgb(ident["bg_a"]), rgb(ident["bg_b"])))


def _centres(size):
    return (2.0 * jnp.arange(size, dtype=jnp.float32) + 1.0) / size - 1.0


def _in_parts(part, parts):
    inside = part == parts[0]
    for k in parts[1:]:
        inside = inside | (part == k)
    return inside


def _camera_rays(rotation, tx, ty, scale, x, y):
    """Origins (tuple of arrays) and shared direction, in head units, of the camera rays through image points x, y."""
    inv = rotation.T / (scale * HEAD_UNIT)
    origin = tuple(inv[i, 0] * (x - tx) + inv[i, 1] * (y - ty) for i in range(3))
    return origin, inv[:, 2]


def _posed_rays(pose, x, y):
    rotation = rotation_from_euler(pose[0], pose[1], pose[2])
    return rotation, _camera_rays(rotation, pose[3], pose[4], pose[5], x, y)


def _lambert(normal, rotation):
    """Diffuse and specular terms of a light fixed in camera space, for canonical normals under rotation."""
    light = rotation.T @ _normalize(LIGHT)
    halfway = rotation.T @ _normalize(_normalize(LIGHT) + jnp.array([0.0, 0.0, -1.0]))
    norm = jnp.sqrt(normal[0] ** 2 + normal[1] ** 2 + normal[2] ** 2) + 1e-9
    diffuse = jnp.maximum(sum(normal[i] * light[i] for i in range(3)) / norm, 0.0)
    spec = jnp.maximum(sum(normal[i] * halfway[i] for i in range(3)) / norm, 0.0)
    spec = spec * spec
    spec = spec * spec
    spec = spec * spec
    return diffuse, spec * spec


def _pixel_rays(pose, body_pose, height, width):
    xs, ys = _centres(width), _centres(height)
    head = _posed_rays(pose, xs[None, :], ys[:, None])
    body = _posed_rays(body_pose, xs[None, :], ys[:, None])
    return head, body


def cast_frame(ident, pose, body_pose, height, width):
    """Camera depth z (H, W) of the first surface each pixel sees (inf: none) and the part index (-1: none).

    pose and body_pose = (yaw, pitch, roll, tx, ty, scale) as in `geometry.pose_from_params`: the head's
    pose and the pose of the neck and torso.
    """
    (_, (origin, direction)), (_, (body_origin, body_direction)) = _pixel_rays(pose, body_pose, height, width)
    z, part = cast(origin, direction, ident)
    z_body, part_body = cast(body_origin, body_direction, ident, BODY_PARTS)
    on_body = z_body < z
    return jnp.where(on_body, z_body, z), jnp.where(on_body, part_body, part)


def _select_part(part, table):
    """table[part] for a small per-part table (K, 3), as a tuple of three arrays (zeros where part is -1)."""
    value = [jnp.zeros(part.shape)] * 3
    for k in range(table.shape[0]):
        value = [jnp.where(part == k, table[k, i], value[i]) for i in range(3)]
    return value


def surface(ident, pose, body_pose, z, part, height, width):
    """Hit point (head units, tuple of x, y, z; body parts in the body frame), camera-facing normal, on-body mask."""
    (rotation, (origin, direction)), (body_rotation, (body_origin, body_direction)) = _pixel_rays(
        pose, body_pose, height, width)
    on_body = _in_parts(part, BODY_PARTS)
    z = jnp.where(part >= 0, z, 0.0)
    point = tuple(jnp.where(on_body, body_origin[i] + z * body_direction[i], origin[i] + z * direction[i])
                  for i in range(3))
    centre, radii = _select_part(part, ident["centres"]), _select_part(part, ident["radii"])
    normal = [(point[i] - centre[i]) / (radii[i] * radii[i] + 1e-9) for i in range(3)]
    # Skin normals blend the gradients of all skin ellipsoids passing near the point, which rounds the creases
    # where ellipsoids meet (shading only; the geometry stays the exact union).
    blended = [0.0, 0.0, 0.0]
    for k in SKIN_PARTS:
        c, r = ident["centres"][k], ident["radii"][k]
        q = [(point[i] - c[i]) / r[i] for i in range(3)]
        weight = bump((q[0] * q[0] + q[1] * q[1] + q[2] * q[2] - 1.0) / NORMAL_BLEND)
        blended = [blended[i] + weight * q[i] / r[i] for i in range(3)]
    on_skin = _in_parts(part, SKIN_PARTS)
    normal = [jnp.where(on_skin, blended[i], normal[i]) for i in range(3)]
    ray = [jnp.where(on_body, body_direction[i], direction[i]) for i in range(3)]
    facing = jnp.where(sum(normal[i] * ray[i] for i in range(3)) > 0, -1.0, 1.0)
    normal = tuple(n * facing for n in normal)
    return point, normal, on_body, (rotation, body_rotation)


def shade_frame(ident, pose, body_pose, expr, z, part, height, width):
    """The frame as one packed int32 per pixel: 8 bits per RGB channel, bit 24 head mask, bit 25 face mask.

    z, part come from `cast_frame`; expr as in `synth_face.EXPRESSION_NAMES`. The head mask is the foreground
    (any surface: head, hair, neck, torso). The face mask is the skin of the face: a hit on the skull, face
    or nose ellipsoids (not hair, ears, neck) in front of the head-unit plane z = FACE_DEPTH_LIMIT.
    Everything ends in one array because XLA on CPU recomputes a value shared by several outputs per output.
    """
    point, normal, on_body, (rotation, body_rotation) = surface(ident, pose, body_pose, z, part, height, width)
    diffuse, spec = _lambert(normal, rotation)
    diffuse_body, spec_body = _lambert(normal, body_rotation)
    diffuse, spec = jnp.where(on_body, diffuse_body, diffuse), jnp.where(on_body, spec_body, spec)
    hit = part >= 0
    face = hit & _in_parts(part, FACE_PARTS) & (point[2] < FACE_DEPTH_LIMIT)
    skin = rgb(ident["skin"])
    face_colour = paint_face(point[0], point[1], ident, expr, 2.0 / (width * pose[5] * HEAD_UNIT))
    hair_c, hair_r = ident["centres"][PART["hair"]], ident["radii"][PART["hair"]]
    q = [(point[i] - hair_c[i]) / hair_r[i] for i in range(3)]
    strands = ident["strand_freq"] / (2 * jnp.pi) * q[0] / jnp.sqrt(q[0] ** 2 + q[2] ** 2 + 0.05)
    strands = 0.68 + 0.32 * jnp.abs(strands - jnp.floor(strands) - 0.5) * 2
    hair_colour = mul(rgb(ident["hair_colour"]), strands)
    ears = _in_parts(part, (PART["ear_left"], PART["ear_right"]))
    is_hair = _in_parts(part, HAIR_PARTS)
    shine = jnp.where(is_hair, 0.08, jnp.where(_in_parts(part, SKIN_PARTS + (PART["neck"],)), 0.14, 0.03))
    albedo = tuple(
        jnp.where(face, f, jnp.where(is_hair, h, jnp.where(part == PART["torso"], c, s * jnp.where(ears, e, 0.9))))
        for f, h, c, s, e in zip(face_colour, hair_colour, rgb(ident["clothes"]), skin, (1.0, 0.9, 0.88)))
    shade = AMBIENT + (1.0 - AMBIENT) * diffuse
    colour = tuple(jnp.where(hit, a * shade + shine * spec, b)
                   for a, b in zip(albedo, background(_centres(width), _centres(height), ident)))
    channels = [jnp.round(jnp.clip(c, 0.0, 1.0) * 255.0).astype(jnp.int32) for c in colour]
    return channels[0] | (channels[1] << 8) | (channels[2] << 16) | (hit.astype(jnp.int32) << 24) | (
        face.astype(jnp.int32) << 25)


def unpack_frame(packed):
    """Image (..., 3) uint8, head mask and face mask (...) bool from `shade_frame`'s packed pixels."""
    image = jnp.stack([(packed >> shift) & 255 for shift in (0, 8, 16)], -1).astype(jnp.uint8)
    return image, (packed & (1 << 24)) != 0, (packed & (1 << 25)) != 0


def landmarks_3d(ident, expr):
    """Canonical 3D landmarks (NUM_LANDMARKS, 3): the painted feature layout lifted onto the skin surface."""
    xy = landmarks_xy(ident, expr)
    origin = (xy[:, 0], xy[:, 1], jnp.zeros_like(xy[:, 0]))
    z, _ = cast(origin, jnp.array([0.0, 0.0, 1.0]), ident, SKIN_PARTS)
    return jnp.concatenate([xy, z[:, None]], -1) * HEAD_UNIT


def landmark_visibility(ident, pose, body_pose, points):
    """Whether each canonical point (K, 3) is the first surface hit along its camera ray under pose."""
    rotation = rotation_from_euler(pose[0], pose[1], pose[2])
    camera = pose[5] * points @ rotation.T
    x, y = camera[:, 0] + pose[3], camera[:, 1] + pose[4]
    z, _ = cast(*_camera_rays(rotation, pose[3], pose[4], pose[5], x, y), ident)
    _, (body_origin, body_direction) = _posed_rays(body_pose, x, y)
    z_body, _ = cast(body_origin, body_direction, ident, BODY_PARTS)
    return jnp.minimum(z, z_body) >= camera[:, 2] - 1e-3 * pose[5]
