"""CSIM embedders: ArcFace IResNet parity with a PyTorch reference, its import, alignment, and dlib on real faces."""

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest
import skimage.data
import torch
from matplotlib import cbook

from dex_jax.convert.arcface import convert_arcface, iresnet_param_shapes, load_arcface, stage_blocks_from_state_dict
from dex_jax.evaluate import clu_metrics
from dex_jax.evaluate.identity import (
    ARCFACE_TEMPLATE,
    MEDIAPIPE_FIVE_POINTS,
    ArcFaceEmbedder,
    DlibEmbedder,
    align_arcface,
    embed_frames,
    similarity_transform,
)
from dex_jax.face.arcface import INPUT_SIZE, IRESNET_STAGE_BLOCKS, IResNet
from dex_jax.face.landmarker import FaceLandmarker

SMALL_BLOCKS = (1, 2, 2, 1)


class TorchIBasicBlock(torch.nn.Module):
    """insightface's IBasicBlock, from its published layout: bn1, conv1, bn2, prelu, conv2 (strided), bn3."""

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.bn1 = torch.nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = torch.nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = torch.nn.PReLU(planes)
        self.conv2 = torch.nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = torch.nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = torch.nn.Sequential(torch.nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                                  torch.nn.BatchNorm2d(planes, eps=1e-5))

    def forward(self, x):
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + (x if self.downsample is None else self.downsample(x))


class TorchIResNet(torch.nn.Module):
    """insightface arcface_torch IResNet: conv1/bn1/prelu stem, layer1..4, bn2, flatten, dropout, fc, features."""

    def __init__(self, stage_blocks):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = torch.nn.PReLU(64)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), stage_blocks)):
            layer = [TorchIBasicBlock(inplanes, planes, 2)] + [TorchIBasicBlock(planes, planes, 1)
                                                               for _ in range(blocks - 1)]
            setattr(self, f"layer{i + 1}", torch.nn.Sequential(*layer))
            inplanes = planes
        self.bn2 = torch.nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = torch.nn.Dropout(p=0.0)
        self.fc = torch.nn.Linear(512 * 7 * 7, 512)
        self.features = torch.nn.BatchNorm1d(512, eps=1e-5)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def _randomized(stage_blocks, seed=0):
    """A TorchIResNet in eval mode with random weights, BatchNorm statistics and PReLU slopes."""
    torch.manual_seed(seed)
    model = TorchIResNet(stage_blocks)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
            elif isinstance(module, torch.nn.PReLU):
                module.weight.uniform_(0.0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def torch_model():
    return _randomized(SMALL_BLOCKS)


@pytest.fixture(scope="module")
def small_params(torch_model):
    return convert_arcface({k: v.numpy() for k, v in torch_model.state_dict().items()})


@pytest.mark.parametrize("stage_blocks", [SMALL_BLOCKS, IRESNET_STAGE_BLOCKS[50]])
def test_iresnet_parity_with_torch(stage_blocks):
    model = _randomized(stage_blocks)
    params = convert_arcface({k: v.numpy() for k, v in model.state_dict().items()})
    x = np.random.default_rng(0).uniform(-1, 1, (1, INPUT_SIZE, INPUT_SIZE, 3)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = np.asarray(jax.jit(IResNet(stage_blocks).apply)({"params": params}, x))
    err = np.abs(got - want).max()
    print(f"\nIResNet{stage_blocks} 112x112 batch 1: max abs err {err:.2e}, output max |y| {np.abs(want).max():.2f}")
    assert err <= 1e-4


def test_iresnet_param_counts_match_torch():
    for depth, blocks in IRESNET_STAGE_BLOCKS.items():
        with torch.device("meta"):
            want = sum(p.numel() for p in TorchIResNet(blocks).parameters())
        got = sum(int(np.prod(shape)) for shape in iresnet_param_shapes(blocks).values())
        print(f"\nIResNet-{depth}: {got:,} params (PyTorch reference {want:,})")
        assert got == want
    assert sum(int(np.prod(s)) for s in iresnet_param_shapes(IRESNET_STAGE_BLOCKS[50]).values()) == 43_590_848
    assert sum(int(np.prod(s)) for s in iresnet_param_shapes(IRESNET_STAGE_BLOCKS[100]).values()) == 65_156_160


def test_converter_reads_files_and_names_bad_keys(torch_model, small_params, tmp_path):
    state = torch_model.state_dict()
    path = tmp_path / "backbone.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    loaded = load_arcface(path)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, loaded, small_params))
    assert stage_blocks_from_state_dict(state) == SMALL_BLOCKS
    numpy_state = {k: v.numpy() for k, v in state.items()}
    with pytest.raises(ValueError, match=r"missing from checkpoint: layer2\.1\.prelu\.weight \(128,\)"):
        convert_arcface({k: v for k, v in numpy_state.items() if k != "layer2.1.prelu.weight"})
    with pytest.raises(ValueError, match=r"fc\.weight checkpoint \(512, 100\) vs model \(512, 25088\)"):
        convert_arcface({**numpy_state, "fc.weight": np.zeros((512, 100))})
    with pytest.raises(ValueError, match=r"not in the model: layer2\.1\."):
        convert_arcface(numpy_state, stage_blocks=(1, 1, 2, 1))


def test_similarity_transform_recovers_a_similarity():
    angle, scale, shift = np.radians(17.0), 0.37, np.array([12.0, -30.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = np.random.default_rng(1).uniform(0, 300, (5, 2))
    warp = similarity_transform(points, points @ (scale * rotation).T + shift)
    np.testing.assert_allclose(warp, np.concatenate([scale * rotation, shift[:, None]], axis=1), atol=1e-9)


@pytest.fixture(scope="module")
def faces():
    """The astronaut, its mirror image, Grace Hopper (matplotlib's sample photo) and a faceless frame."""
    astronaut = skimage.data.astronaut()
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(PIL.Image.open(f).convert("RGB"))
    return {"astronaut": astronaut, "mirror": np.ascontiguousarray(astronaut[:, ::-1]), "hopper": hopper,
            "blank": np.full((256, 256, 3), 127, np.uint8)}


def test_arcface_embedder_aligns_and_embeds(faces, small_params):
    with FaceLandmarker() as landmarker:
        face = landmarker.detect(faces["astronaut"])
        crop, warp = align_arcface(faces["astronaut"], face.landmarks)
        points = face.landmarks[list(MEDIAPIPE_FIVE_POINTS), :2]
        landed = points @ warp[:, :2].T + warp[:, 2]
        embedder = ArcFaceEmbedder(small_params, landmarker)
        embeddings, found = embed_frames(embedder, [faces["astronaut"], faces["blank"]])
    assert crop.shape == (INPUT_SIZE, INPUT_SIZE, 3)
    residual = np.linalg.norm(landed - ARCFACE_TEMPLATE, axis=1)  # a smiling, slightly pitched face vs the mean
    assert residual[:2].max() < 3.5 and residual.max() < 9.0
    assert embedder.name == "arcface_iresnet1-2-2-1"
    assert found.tolist() == [True, False] and embeddings.shape == (2, 512)
    np.testing.assert_allclose(embeddings[0], embedder.embed_aligned(crop[None])[0], rtol=1e-6)
    assert not embeddings[1].any()


def test_dlib_csim_separates_identities(faces):
    embedder = DlibEmbedder()
    embeddings, found = embed_frames(embedder, [faces[k] for k in ("astronaut", "mirror", "hopper", "blank")])
    assert found.tolist() == [True, True, True, False]
    csim = clu_metrics.CSIM.with_embedder(embedder.name)
    mirror = csim.from_model_output(embeddings[1:2], embeddings[0], found[1:2]).compute()
    other = csim.from_model_output(embeddings[2:3], embeddings[0], found[2:3]).compute()
    batch = csim.from_model_output(embeddings[1:], embeddings[0], found[1:]).compute()
    distances = np.linalg.norm(embeddings[1:3] - embeddings[0], axis=1)
    print(f"\n{csim.embedder}: CSIM(astronaut, mirror) {float(mirror['mean']):.4f}, "
          f"CSIM(astronaut, Grace Hopper) {float(other['mean']):.4f}; "
          f"euclidean distances {distances.round(4).tolist()} (dlib's same-person threshold 0.6)")
    assert csim.embedder == "dlib_resnet_v1"
    assert float(mirror["mean"]) > 0.95 and float(other["mean"]) < float(mirror["mean"]) - 0.05
    assert distances[0] < 0.6 < distances[1]
    assert int(batch["count"]) == 2 and int(batch["no_face"]) == 1
    with pytest.raises(ValueError, match="uint8 RGB"):
        embedder(faces["astronaut"][..., 0])


def test_cosine_similarity_broadcasts_a_source_vector():
    frames = jnp.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    similarity = clu_metrics.cosine_similarity(frames, jnp.array([2.0, 0.0]))
    np.testing.assert_allclose(np.asarray(similarity), [1.0, 0.0, -1.0])
