"""The converters' shared reader, layouts and mismatch report, against PyTorch itself."""

import jax
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dex_jax.convert.torch_state import (MAX_LISTED, check_state_dict, read_state_dict, to_flax, torch_key,
                                         torch_shape)


def test_safetensors_keep_their_dtypes(tmp_path):
    tensors = {"a": torch.tensor([1.5, -2.25], dtype=torch.bfloat16), "b": torch.arange(6.0).reshape(2, 3).half(),
               "steps": torch.tensor(7, dtype=torch.int64)}
    save_file(tensors, tmp_path / "w.safetensors")
    read = read_state_dict(tmp_path / "w.safetensors")
    assert str(read["a"].dtype) == "bfloat16" and read["b"].dtype == np.float16 and read["steps"].dtype == np.int64
    np.testing.assert_array_equal(read["a"].astype(np.float32), [1.5, -2.25])
    np.testing.assert_array_equal(read["b"], np.arange(6.0).reshape(2, 3))
    assert read["steps"] == 7


def test_torch_files_read_as_numpy_with_float32_floats(tmp_path):
    state = {"w": torch.randn(3, 2, dtype=torch.bfloat16), "b": torch.randn(3), "n": torch.tensor(5)}
    torch.save(state, tmp_path / "w.pth")
    read = read_state_dict(tmp_path / "w.pth")
    assert {k: v.dtype for k, v in read.items()} == {"w": np.float32, "b": np.float32, "n": np.int64}
    np.testing.assert_array_equal(read["w"], state["w"].float().numpy())
    np.testing.assert_array_equal(read["b"], state["b"].numpy())


def _bad_files(folder):
    torch.save({"w": torch.ones(64)}, folder / "full.pth")
    (folder / "truncated.pth").write_bytes((folder / "full.pth").read_bytes()[:200])
    torch.save({"w": torch.ones(10_000)}, folder / "longer.pth")
    data = (folder / "longer.pth").read_bytes()
    (folder / "half.pth").write_bytes(data[:len(data) // 2])  # torch 2.14 raises OSError on this cut, not RuntimeError
    (folder / "empty.pt").write_bytes(b"")
    torch.save({"w": torch.ones(2), "layer": torch.nn.Linear(2, 2)}, folder / "module.pth")
    torch.save({"model": {"w": torch.ones(2)}}, folder / "nested.pth")
    save_file({"w": torch.ones(64)}, folder / "full.safetensors")
    (folder / "truncated.safetensors").write_bytes((folder / "full.safetensors").read_bytes()[:-8])
    return {"absent.pth": "weights file not found",
            "truncated.pth": "not a readable PyTorch weights file .*zip archive",
            "half.pth": r"not a readable PyTorch weights file \(the file ends early or is not a PyTorch archive\)",
            "empty.pt": r"not a readable PyTorch weights file \(the file ends early\)",
            "module.pth": r"pickles torch\.nn\.modules\.linear\.Linear, more than weights",
            "nested.pth": r"does not hold a flat state dict \(name -> tensor\)",
            "truncated.safetensors": "not a readable safetensors file"}


def test_bad_files_give_one_line_errors_naming_the_file(tmp_path):
    for name, problem in _bad_files(tmp_path).items():
        with pytest.raises(ValueError, match=problem) as err:
            read_state_dict(tmp_path / name)
        assert "\n" not in str(err.value) and name in str(err.value)


@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_conv_kernels_in_flax_layout_give_torch_convolutions(spatial):
    """OIW -> WIO, OIHW -> HWIO, OIDHW -> DHWIO: the same convolution on channels-last inputs."""
    rng = np.random.default_rng(spatial)
    weight = rng.standard_normal((5, 3) + (3,) * spatial).astype(np.float32)
    x = rng.standard_normal((2, 3) + (6,) * spatial).astype(np.float32)
    conv = (torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d)[spatial - 1]
    want = conv(torch.from_numpy(x), torch.from_numpy(weight)).numpy()
    lhs = "N" + "DHW"[3 - spatial:] + "C"
    rhs = "DHW"[3 - spatial:] + "IO"
    kernel = to_flax(torch.from_numpy(weight))
    got = jax.lax.conv_general_dilated(np.moveaxis(x, 1, -1), kernel, (1,) * spatial, "VALID",
                                       dimension_numbers=(lhs, rhs, lhs))
    np.testing.assert_allclose(np.moveaxis(np.asarray(got), -1, 1), want, atol=1e-5)
    assert torch_shape(kernel.shape) == weight.shape


def test_linear_weights_and_vectors_in_flax_layout():
    rng = np.random.default_rng(0)
    weight, bias, x = rng.standard_normal((4, 3)), rng.standard_normal(4), rng.standard_normal((2, 3))
    want = torch.nn.functional.linear(*(torch.from_numpy(a) for a in (x, weight, bias))).numpy()
    np.testing.assert_allclose(x @ to_flax(weight) + to_flax(bias), want, atol=1e-5)
    assert to_flax(weight).dtype == np.float32
    assert torch_shape((3, 4)) == (4, 3) and torch_shape((4,)) == (4,)
    assert torch_key(("stages_1", "blocks_0", "norm", "scale")) == "stages.1.blocks.0.norm.weight"


def test_mismatch_report_counts_everything_and_lists_the_first_few():
    expected = {f"layer.{i}.weight": (2, 3) for i in range(MAX_LISTED + 3)} | {"head.bias": (2,)}
    state = {"layer.0.weight": np.zeros((3, 2)), "head.bias": np.zeros(2), "extra.weight": np.zeros(1),
             "tracked": np.zeros(())}
    with pytest.raises(ValueError) as err:
        check_state_dict("Toy", state, expected, extra_ok=lambda key: key == "tracked")
    message = str(err.value)
    assert message.startswith("Toy checkpoint does not match the model (1 mismatched, 7 missing, 1 unexpected): ")
    assert "shape mismatches: layer.0.weight checkpoint (3, 2) vs model (2, 3)" in message
    assert f"layer.{MAX_LISTED}.weight" in message and f"layer.{MAX_LISTED + 1}.weight" not in message
    assert message.endswith("not in the model: extra.weight (1,)") and "tracked" not in message
    check_state_dict("Toy", {"head.bias": np.zeros(2)}, {"head.bias": (2,)})
