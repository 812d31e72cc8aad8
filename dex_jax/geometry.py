"""Head-pose geometry: rotations, similarity poses P = [sR | t], warp grids, trilinear sampling, ray maps."""

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def _float(x):
    """x as an array of at least float32 precision (float64 stays float64)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _pose(pose, name):
    """pose as a float array, checked to have shape (..., 3, 4)."""
    pose = _float(pose)
    if pose.ndim < 2 or pose.shape[-2:] != (3, 4):
        raise ValueError(f"{name} must have shape (..., 3, 4), got {pose.shape}")
    return pose


def _check_size(**sizes):
    for name, size in sizes.items():
        if not hasattr(size, "__index__") or size < 1:
            raise ValueError(f"{name} must be a positive int, got {size!r}")


def _matmul(a, b):
    return jnp.einsum("...ij,...jk->...ik", a, b, precision=_HIGHEST)


def _transform_points(pose, points):
    """Apply pose (..., 3, 4) to points (..., 3) with broadcast leading dims, without a (TF32-prone) matmul."""
    linear = pose[..., :3]
    return (linear * points[..., None, :]).sum(-1) + pose[..., 3]


def _centres(size):
    """Normalized coordinates of the `size` cell centres along one axis (align_corners=False)."""
    return (2.0 * jnp.arange(size, dtype=jnp.float32) + 1.0) / size - 1.0


def _to_index(coord, size):
    """Inverse of `_centres`: normalized coordinate -> continuous cell index (centre of cell i at i)."""
    return ((coord + 1.0) * size - 1.0) / 2.0


def rotation_from_euler(yaw, pitch, roll):
    """Rotation matrices (..., 3, 3) from yaw, pitch, roll in radians (broadcast against each other).

    R = Rz(roll) @ Ry(yaw) @ Rx(pitch) with the standard right-hand matrices
    Rx(a) = [[1,0,0],[0,c,-s],[0,s,c]], Ry(a) = [[c,0,s],[0,1,0],[-s,0,c]],
    Rz(a) = [[c,-s,0],[s,c,0],[0,0,1]], where c = cos(a), s = sin(a). Axes are those of the
    normalized volume/image space: x -> image right (W), y -> image down (H), z -> depth away
    from the camera (D); so pitch turns about x, yaw about the vertical y and roll in the image plane.
    """
    yaw, pitch, roll = jnp.broadcast_arrays(_float(yaw), _float(pitch), _float(roll))
    one, zero = jnp.ones_like(yaw), jnp.zeros_like(yaw)

    def matrix(rows):
        return jnp.stack([jnp.stack(row, -1) for row in rows], -2)

    cx, sx = jnp.cos(pitch), jnp.sin(pitch)
    cy, sy = jnp.cos(yaw), jnp.sin(yaw)
    cz, sz = jnp.cos(roll), jnp.sin(roll)
    rx = matrix([[one, zero, zero], [zero, cx, -sx], [zero, sx, cx]])
    ry = matrix([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]])
    rz = matrix([[cz, -sz, zero], [sz, cz, zero], [zero, zero, one]])
    return _matmul(rz, _matmul(ry, rx))


def pose_matrix(rotation, translation_xy, scale):
    """Pose P = [s R | t] of shape (..., 3, 4) with t = (tx, ty, 0).

    rotation (..., 3, 3), translation_xy (..., 2), scale (...,). P maps canonical head space to
    camera space: X_cam = s R X + t, both in the normalized [-1, 1]^3 space (x right, y down,
    z away from the orthographic camera looking along +z). tx = 2/W moves content one pixel right.
    """
    rotation, translation_xy, scale = _float(rotation), _float(translation_xy), _float(scale)
    if rotation.shape[-2:] != (3, 3):
        raise ValueError(f"rotation must have shape (..., 3, 3), got {rotation.shape}")
    if translation_xy.shape[-1:] != (2,):
        raise ValueError(f"translation_xy must have shape (..., 2), got {translation_xy.shape}")
    translation = jnp.concatenate([translation_xy, jnp.zeros_like(translation_xy[..., :1])], -1)
    lead = jnp.broadcast_shapes(rotation.shape[:-2], translation.shape[:-1], scale.shape)
    linear = jnp.broadcast_to(scale[..., None, None] * rotation, lead + (3, 3))
    translation = jnp.broadcast_to(translation, lead + (3,))
    return jnp.concatenate([linear, translation[..., None]], -1)


def pose_from_params(yaw, pitch, roll, tx, ty, scale):
    """Pose (..., 3, 4) from the six pose-encoder outputs: [s R(yaw, pitch, roll) | (tx, ty, 0)].

    Angles in radians with R = Rz(roll) @ Ry(yaw) @ Rx(pitch) (see `rotation_from_euler`);
    X_cam = s R X + t in normalized [-1, 1]^3 space (see `pose_matrix`).
    """
    return pose_matrix(rotation_from_euler(yaw, pitch, roll), jnp.stack(jnp.broadcast_arrays(tx, ty), -1), scale)


def compose(pose_a, pose_b):
    """The pose x -> P_a(P_b(x)), i.e. P_a @ P_b in homogeneous form; (..., 3, 4) with broadcast leading dims."""
    pose_a = _pose(pose_a, "pose_a")
    pose_b = _pose(pose_b, "pose_b")
    linear = _matmul(pose_a[..., :3], pose_b[..., :3])
    translation = _transform_points(pose_a, pose_b[..., 3])
    return jnp.concatenate([linear, translation[..., None]], -1)


def invert(pose):
    """The inverse pose (..., 3, 4): x -> M^-1 (x - t) for P = [M | t] (any invertible M, e.g. sR)."""
    pose = _pose(pose, "pose")
    inverse = jnp.linalg.inv(pose[..., :3])
    translation = -(inverse * pose[..., None, :, 3]).sum(-1)
    return jnp.concatenate([inverse, translation[..., None]], -1)


def voxel_centres(depth, height, width):
    """Normalized (x, y, z) of every voxel centre, shape (D, H, W, 3): x = (2*col + 1)/W - 1 etc."""
    _check_size(depth=depth, height=height, width=width)
    z, y, x = jnp.meshgrid(_centres(depth), _centres(height), _centres(width), indexing="ij")
    return jnp.stack([x, y, z], -1)


def warp_grid(pose_src, pose_drv, depth, height, width):
    """Sampling grid (N, D, H, W, 3), last axis (x, y, z), that warps a volume from source to driving pose.

    For every driving-space voxel centre x (align_corners=False: x = (2*col + 1)/W - 1,
    y = (2*row + 1)/H - 1, z = (2*slice + 1)/D - 1; x right, y down, z away from the camera)
    the grid holds the source position P_s P_d^-1 x, so sampling the source volume there moves
    its content by P_d P_s^-1. Poses are (N, 3, 4) (or any leading dims, which lead the output).
    """
    pose_src = _pose(pose_src, "pose_src")
    pose_drv = _pose(pose_drv, "pose_drv")
    transform = compose(pose_src, invert(pose_drv))
    return _transform_points(transform[..., None, None, None, :, :], voxel_centres(depth, height, width))


def _corners(grid, depth, height, width):
    """The 8 trilinear corners of every grid point as (flat voxel index, weight); out-of-range corners weigh 0."""
    sizes = (width, height, depth)
    index = [jnp.clip(_to_index(grid[..., a], sizes[a]), -2.0, sizes[a] + 1.0) for a in range(3)]
    low = [jnp.floor(i) for i in index]
    frac = [i - f for i, f in zip(index, low)]
    low = [f.astype(jnp.int32) for f in low]
    corners = []
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                offsets = (dx, dy, dz)
                coords = [low[a] + offsets[a] for a in range(3)]
                inside = jnp.ones(grid.shape[:-1], bool)
                weight = jnp.ones(grid.shape[:-1], frac[0].dtype)
                for a in range(3):
                    inside &= (coords[a] >= 0) & (coords[a] < sizes[a])
                    weight *= frac[a] if offsets[a] else 1.0 - frac[a]
                x, y, z = (jnp.clip(coords[a], 0, sizes[a] - 1) for a in range(3))
                corners.append(((z * height + y) * width + x, jnp.where(inside, weight, 0.0)))
    return corners


@jax.checkpoint
def _sample(volume, grid):
    n, depth, height, width, channels = volume.shape
    rows = volume.reshape(n, depth * height * width, channels)

    def gather(batch_rows, index):
        return batch_rows.at[index].get(mode="promise_in_bounds")

    return sum(jax.vmap(gather)(rows, index) * weight[..., None]
               for index, weight in _corners(grid, depth, height, width))


def trilinear_sample(volume, grid):
    """Sample volume (N, D, H, W, C) at grid (N, d, h, w, 3) -> (N, d, h, w, C), differentiable in both.

    Same semantics as torch.nn.functional.grid_sample on 5-D input with mode='bilinear',
    padding_mode='zeros', align_corners=False: grid[..., 0] = x indexes W, grid[..., 1] = y indexes
    H, grid[..., 2] = z indexes D, with -1 and 1 at the outer faces of the edge voxels (voxel i's
    centre at (2i + 1)/size - 1); corners outside the volume contribute zero. Weights are computed
    in float32 (or the grid's wider dtype); the result has the volume's dtype. Each of the 8 corners
    is one vectorised gather over all grid points (clipped indices, zero weight when outside);
    under differentiation the gathers are recomputed in the backward pass instead of stored, so
    no corner-sized intermediates are kept between the forward and backward passes.
    """
    volume, grid = jnp.asarray(volume), jnp.asarray(grid)
    if volume.ndim != 5:
        raise ValueError(f"volume must be (N, D, H, W, C), got shape {volume.shape}")
    if grid.ndim != 5 or grid.shape[-1] != 3:
        raise ValueError(f"grid must be (N, d, h, w, 3), got shape {grid.shape}")
    if grid.shape[0] != volume.shape[0]:
        raise ValueError(f"grid batch {grid.shape[0]} does not match volume batch {volume.shape[0]}")
    grid = _float(grid)
    return _sample(volume, grid).astype(volume.dtype)


def warp_volume(volume, pose_src, pose_drv):
    """Warp volume (N, D, H, W, C) from source pose to driving pose; same shape out.

    Samples the source at `warp_grid(pose_src, pose_drv, D, H, W)` (the position P_s P_d^-1 x for
    every driving voxel centre x) with `trilinear_sample`. Poses are (N, 3, 4) or broadcast to N.
    """
    volume = jnp.asarray(volume)
    if volume.ndim != 5:
        raise ValueError(f"volume must be (N, D, H, W, C), got shape {volume.shape}")
    n, depth, height, width, _ = volume.shape
    grid = warp_grid(pose_src, pose_drv, depth, height, width)
    return trilinear_sample(volume, jnp.broadcast_to(grid, (n, depth, height, width, 3)))


def ray_map(pose, height, width):
    """Head-pose ray map (Eq. 3) of shape (N, H, W, 3): P (X, 1) - X for canonical X = (u, v, 0).

    (u, v) are the pixel centres in [-1, 1]^2 (u = (2*col + 1)/W - 1 to the right, v = (2*row + 1)/H - 1
    down); the translation t = (tx, ty, 0) is included, so a pure translation gives (tx, ty, 0)
    everywhere and the identity pose gives zeros. pose is (N, 3, 4) or any leading dims.
    """
    pose = _pose(pose, "pose")
    _check_size(height=height, width=width)
    v, u = jnp.meshgrid(_centres(height), _centres(width), indexing="ij")
    canonical = jnp.stack([u, v, jnp.zeros_like(u)], -1)
    return _transform_points(pose[..., None, None, :, :], canonical) - canonical


def project_points(pose, points, height, width):
    """Continuous pixel coordinates (N, K, 2) as (col, row) of canonical points (N, K, 3) under pose (N, 3, 4).

    X_cam = P (X, 1); the orthographic camera drops z and converts normalized x, y to pixel units
    with pixel centres at integers: col = ((x + 1) * W - 1) / 2, row = ((y + 1) * H - 1) / 2.
    """
    pose = _pose(pose, "pose")
    _check_size(height=height, width=width)
    points = jnp.asarray(points)
    if points.shape[-1:] != (3,):
        raise ValueError(f"points must have shape (..., K, 3), got {points.shape}")
    camera = _transform_points(pose[..., None, :, :], points)
    return jnp.stack([_to_index(camera[..., 0], width), _to_index(camera[..., 1], height)], -1)
