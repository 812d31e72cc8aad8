"""Tests for dex_jax.geometry: rotations, pose algebra, warp grids, trilinear sampling, ray maps, projection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.test_util import check_grads

from dex_jax import geometry

IDENTITY = np.eye(3, 4, dtype=np.float32)[None]
warp_volume = jax.jit(geometry.warp_volume)
trilinear_sample = jax.jit(geometry.trilinear_sample)
pose_from_params = jax.jit(geometry.pose_from_params)


def random_params(rng, n):
    return dict(
        yaw=rng.uniform(-1.5, 1.5, n), pitch=rng.uniform(-1.0, 1.0, n), roll=rng.uniform(-1.0, 1.0, n),
        tx=rng.uniform(-0.5, 0.5, n), ty=rng.uniform(-0.5, 0.5, n), scale=rng.uniform(0.5, 2.0, n))


def translation_pose(tx, ty):
    return pose_from_params(0.0, 0.0, 0.0, tx, ty, 1.0)[None]


def _homogeneous(pose):
    """(..., 3, 4) -> (..., 4, 4) with the row (0, 0, 0, 1) appended."""
    pose = np.asarray(pose)
    return np.concatenate([pose, np.broadcast_to([[0.0, 0.0, 0.0, 1.0]], pose.shape[:-2] + (1, 4))], -2)


def test_compose_invert_round_trip():
    rng = np.random.default_rng(0)
    poses = pose_from_params(**random_params(rng, 6))
    identity = np.broadcast_to(IDENTITY, (6, 3, 4))
    np.testing.assert_allclose(geometry.compose(poses, geometry.invert(poses)), identity, atol=1e-5)
    np.testing.assert_allclose(geometry.compose(geometry.invert(poses), poses), identity, atol=1e-5)
    others = pose_from_params(**random_params(rng, 6))
    homogeneous = _homogeneous(poses) @ _homogeneous(others)
    np.testing.assert_allclose(geometry.compose(poses, others), homogeneous[:, :3], atol=1e-5)
    points = rng.normal(size=(6, 3)).astype(np.float32)
    mapped = np.einsum("nij,nj->ni", np.asarray(poses)[:, :, :3], points) + np.asarray(poses)[:, :, 3]
    back = np.einsum("nij,nj->ni", np.asarray(geometry.invert(poses))[:, :, :3], mapped)
    np.testing.assert_allclose(back + np.asarray(geometry.invert(poses))[:, :, 3], points, atol=1e-5)


def test_pose_layout():
    pose = pose_from_params(0.0, 0.0, 0.0, 0.25, -0.5, 2.0)
    np.testing.assert_allclose(pose, [[2, 0, 0, 0.25], [0, 2, 0, -0.5], [0, 0, 2, 0]], atol=1e-7)


def test_rotation_from_euler_orthonormal_and_ordered():
    rng = np.random.default_rng(1)
    yaw, pitch, roll = rng.uniform(-np.pi, np.pi, (3, 8))
    rotation = np.asarray(geometry.rotation_from_euler(yaw, pitch, roll), np.float64)
    assert rotation.shape == (8, 3, 3)
    np.testing.assert_allclose(rotation @ rotation.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (8, 3, 3)), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(rotation), np.ones(8), atol=1e-6)

    def rx(a):
        return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])

    def ry(a):
        return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])

    def rz(a):
        return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])

    for i in range(8):
        np.testing.assert_allclose(rotation[i], rz(roll[i]) @ ry(yaw[i]) @ rx(pitch[i]), atol=1e-6)


def test_identity_pose_warps_volume_to_itself():
    volume = np.random.default_rng(3).normal(size=(2, 4, 8, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(warp_volume(volume, IDENTITY, IDENTITY), volume)
    np.testing.assert_array_equal(geometry.warp_grid(IDENTITY, IDENTITY, 4, 8, 16)[0], geometry.voxel_centres(4, 8, 16))


def test_equal_source_and_driving_poses_give_identity_grid():
    rng = np.random.default_rng(4)
    poses = pose_from_params(**random_params(rng, 2))
    grid = geometry.warp_grid(poses, poses, 5, 6, 7)
    np.testing.assert_allclose(grid, np.broadcast_to(geometry.voxel_centres(5, 6, 7), grid.shape), atol=1e-5)
    volume = rng.normal(size=(2, 5, 6, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(warp_volume(volume, poses, poses), volume, atol=1e-4)


def test_pure_translation_shifts_by_predicted_voxels():
    # Driving pose t = (tx, ty, 0) places canonical content at x + t, so sampling the source at x - t
    # moves content by tx * W / 2 voxels toward larger column indices (right) and ty * H / 2 rows down.
    volume = np.random.default_rng(5).normal(size=(1, 3, 8, 8, 2)).astype(np.float32)
    right_two = np.asarray(warp_volume(volume, IDENTITY, translation_pose(2 * 2 / 8, 0.0)))
    np.testing.assert_allclose(right_two[:, :, :, 2:], volume[:, :, :, :-2], atol=1e-5)
    np.testing.assert_allclose(right_two[:, :, :, :2], 0.0, atol=1e-5)
    up_one = np.asarray(warp_volume(volume, IDENTITY, translation_pose(0.0, -2 / 8)))
    np.testing.assert_allclose(up_one[:, :, :-1], volume[:, :, 1:], atol=1e-5)
    np.testing.assert_allclose(up_one[:, :, -1], 0.0, atol=1e-5)


def test_yaw_90_degrees_permutes_axes():
    # Ry(90) maps (x, y, z) -> (z, y, -x); the source is sampled at Ry(90)^-1 x = (-z, y, x).
    # On a cube of size S with centres (2i + 1)/S - 1, -z(d) is column S-1-d and x(w) is slice w, so
    # out[d, h, w] = in[w, h, S-1-d]: flip the input along W, then swap the D and W axes.
    size = 6
    volume = np.random.default_rng(6).normal(size=(1, size, size, size, 2)).astype(np.float32)
    yaw_90 = pose_from_params(np.pi / 2, 0.0, 0.0, 0.0, 0.0, 1.0)[None]
    warped = warp_volume(volume, IDENTITY, yaw_90)
    expected = volume[:, :, :, ::-1].transpose(0, 3, 2, 1, 4)
    np.testing.assert_allclose(warped, expected, atol=1e-5)


def torch_grid_sample(volume, grid):
    """grid_sample on an N D H W C tensor volume (torch wants N C D H W), returning N d h w C."""
    out = torch.nn.functional.grid_sample(volume.permute(0, 4, 1, 2, 3), grid, mode="bilinear",
                                          padding_mode="zeros", align_corners=False)
    return out.permute(0, 2, 3, 4, 1)


def test_trilinear_sample_matches_torch_grid_sample():
    rng = np.random.default_rng(7)
    volume = rng.normal(size=(2, 5, 6, 7, 3)).astype(np.float32)
    grid = rng.uniform(-1.3, 1.3, size=(2, 4, 5, 6, 3)).astype(np.float32)
    ours = trilinear_sample(volume, grid)
    assert ours.shape == (2, 4, 5, 6, 3)
    volume_t = torch.tensor(volume, requires_grad=True)
    grid_t = torch.tensor(grid, requires_grad=True)
    theirs = torch_grid_sample(volume_t, grid_t)
    np.testing.assert_allclose(ours, theirs.detach().numpy(), atol=1e-5)

    cotangent = rng.normal(size=ours.shape).astype(np.float32)
    (theirs * torch.as_tensor(cotangent)).sum().backward()
    grads = jax.jit(jax.grad(lambda v, g: (geometry.trilinear_sample(v, g) * cotangent).sum(), argnums=(0, 1)))(
        volume, grid)
    np.testing.assert_allclose(grads[0], volume_t.grad.numpy(), atol=1e-5)
    np.testing.assert_allclose(grads[1], grid_t.grad.numpy(), atol=1e-4)


def test_trilinear_sample_keeps_bfloat16_volume_dtype():
    rng = np.random.default_rng(10)
    volume = rng.normal(size=(1, 4, 4, 4, 2)).astype(np.float32)
    grid = rng.uniform(-1.0, 1.0, size=(1, 3, 3, 3, 3)).astype(np.float32)
    low = trilinear_sample(jnp.asarray(volume, jnp.bfloat16), grid)
    assert low.dtype == jnp.bfloat16
    np.testing.assert_allclose(low.astype(np.float32), trilinear_sample(volume, grid), atol=5e-2)


def test_trilinear_gradients_match_finite_differences():
    rng = np.random.default_rng(8)
    sizes = np.array([5, 4, 3])  # (W, H, D) for grid axes (x, y, z)
    with jax.enable_x64(True):
        volume = jnp.asarray(rng.normal(size=(2, 3, 4, 5, 2)))
        # Continuous indices one cell beyond each side, fractions kept away from voxel boundaries.
        index = rng.integers(-1, sizes, size=(2, 2, 3, 3, 3)) + rng.uniform(0.1, 0.9, size=(2, 2, 3, 3, 3))
        grid = jnp.asarray((2 * index + 1) / sizes - 1)
        check_grads(trilinear_sample, (volume, grid), order=1, modes=("fwd", "rev"), eps=1e-6)


def test_warp_gradients_wrt_pose_match_finite_differences():
    rng = np.random.default_rng(9)
    with jax.enable_x64(True):
        volume = jnp.asarray(rng.normal(size=(1, 3, 4, 5, 2)))
        params = jnp.asarray([0.3, -0.2, 0.1, 0.05, -0.1, 1.1])

        @jax.jit
        def warp(p):
            return geometry.warp_volume(volume, np.eye(3, 4)[None], geometry.pose_from_params(*p)[None])

        check_grads(warp, (params,), order=1, modes=("rev",), eps=1e-6)


def pixel_centres(height, width):
    v, u = np.meshgrid((2 * np.arange(height) + 1) / height - 1, (2 * np.arange(width) + 1) / width - 1, indexing="ij")
    return u, v


def test_ray_map():
    height, width = 4, 6
    np.testing.assert_array_equal(geometry.ray_map(IDENTITY, height, width), np.zeros((1, height, width, 3)))
    shifted = geometry.ray_map(translation_pose(0.3, -0.2), height, width)
    np.testing.assert_allclose(shifted, np.broadcast_to([0.3, -0.2, 0.0], (1, height, width, 3)), atol=1e-6)
    angle = 0.4
    rolled = np.asarray(geometry.ray_map(pose_from_params(0.0, 0.0, angle, 0.0, 0.0, 1.0)[None], height, width))
    u, v = pixel_centres(height, width)
    expected = np.stack([u * np.cos(angle) - v * np.sin(angle) - u, u * np.sin(angle) + v * np.cos(angle) - v,
                         np.zeros_like(u)], -1)
    np.testing.assert_allclose(rolled[0], expected, atol=1e-6)
    row, col = 1, 4  # u = 9/6 - 1 = 1/2, v = 3/4 - 1 = -1/4
    np.testing.assert_allclose(rolled[0, row, col], [0.5 * np.cos(angle) + 0.25 * np.sin(angle) - 0.5,
                                                     0.5 * np.sin(angle) - 0.25 * np.cos(angle) + 0.25, 0.0], atol=1e-6)


def test_project_points_lands_on_pixel_centres():
    height, width = 8, 10
    u, v = pixel_centres(height, width)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    points = np.stack([u, v, np.full_like(u, 0.3)], -1).reshape(1, -1, 3).astype(np.float32)
    pixels = np.stack([cols, rows], -1).reshape(1, -1, 2)
    np.testing.assert_allclose(geometry.project_points(IDENTITY, points, height, width), pixels, atol=1e-5)
    one_right_two_down = translation_pose(2 / width, 2 * 2 / height)
    np.testing.assert_allclose(geometry.project_points(one_right_two_down, points, height, width), pixels + [1, 2],
                               atol=1e-5)
    doubled = pose_from_params(0.0, 0.0, 0.0, 0.0, 0.0, 2.0)[None]
    centre = np.zeros((1, 1, 3), np.float32)
    np.testing.assert_allclose(geometry.project_points(doubled, centre, height, width),
                               [[[(width - 1) / 2, (height - 1) / 2]]], atol=1e-5)


def test_bad_input_raises():
    volume = np.zeros((1, 2, 3, 4, 2), np.float32)
    with pytest.raises(ValueError, match="volume"):
        geometry.trilinear_sample(volume[0], np.zeros((1, 2, 2, 2, 3)))
    with pytest.raises(ValueError, match="grid"):
        geometry.trilinear_sample(volume, np.zeros((1, 2, 2, 2, 2)))
    with pytest.raises(ValueError, match="batch"):
        geometry.trilinear_sample(volume, np.zeros((2, 2, 2, 2, 3)))
    with pytest.raises(ValueError, match="pose_drv"):
        warp_volume(volume, IDENTITY, np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="height"):
        geometry.ray_map(IDENTITY, 0, 4)


def test_a_blob_moves_from_its_source_pose_to_its_driving_pose():
    # A canonical point X sits at P_s X in the source volume; warped from P_s to P_d it must land at
    # P_d X = (P_d P_s^-1) (P_s X). Both poses rotate about all three axes, translate and scale, so a warp that
    # composes them in another order (or swaps them) puts the blob elsewhere.
    size = 24
    point = np.array([0.3, -0.25, 0.2])
    pose_src = np.asarray(pose_from_params(0.5, -0.4, 0.0, 0.1, -0.05, 0.9), np.float64)
    pose_drv = np.asarray(pose_from_params(-0.2, 0.3, 0.6, -0.1, 0.08, 1.15), np.float64)

    def place(pose):
        return pose[:, :3] @ point + pose[:, 3]

    centres = np.asarray(geometry.voxel_centres(size, size, size), np.float64)
    sigma = 1.5 * 2 / size  # 1.5 voxels
    blob = np.exp(-np.sum((centres - place(pose_src)) ** 2, -1) / (2 * sigma ** 2))
    warped = np.asarray(warp_volume(blob[None, ..., None].astype(np.float32), pose_src[None].astype(np.float32),
                                    pose_drv[None].astype(np.float32)))[0, ..., 0]
    centroid = np.einsum("dhwc,dhw->c", centres, warped) / warped.sum()
    voxel = 2 / size
    assert warped.sum() > 0.5 * blob.sum()  # inside the volume after the warp
    np.testing.assert_allclose(centroid, place(pose_drv), atol=0.25 * voxel)
    assert np.linalg.norm(place(pose_drv) - place(pose_src)) > 2 * voxel  # the blob moves, by more than its width
    # P_s^-1 P_d P_s X, where the reversed composition (grid P_d^-1 P_s) would put it, is 3 voxels away
