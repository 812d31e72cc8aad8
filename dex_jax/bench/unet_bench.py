"""`dex-portrait bench unet`: our jitted UNet forward against diffusers' PyTorch forward, same config and device."""

import gc
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import unflatten_dict

from dex_jax.arguments import ArgumentParser
from dex_jax.bench.timing import peak_flops, xla_flops
from dex_jax.config_loading import load_config
from dex_jax.convert.diffusers_unet import convert_unet, diffusers_config, model_shapes
from dex_jax.diffusion.unet import unet_from_config

CONFIG_FILE = "unet_model.py"
CPU_CASES = (("tiny_a", 16, 1), ("sd15", 32, 1))
GPU_CASES = (("sd15", 64, 1), ("sd15", 64, 8), ("sd15", 64, 16))
TEXT_TOKENS = 77


def _parse(argv):
    parser = ArgumentParser(prog="dex-portrait bench unet", description=__doc__)
    parser.add_argument("--config", help="a configs/unet_model.py variant (default: the platform's cases)")
    parser.add_argument("--latent", type=int, help="latent side, with --config")
    parser.add_argument("--batch", type=int, nargs="+", help="batch sizes, with --config")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), help="default: bfloat16 on GPU, float32 on CPU")
    parser.add_argument("--attention", choices=("xla", "cudnn"), help="default: cudnn on GPU, xla on CPU")
    parser.add_argument("--iters", type=int, default=5, help="timed forwards per side")
    return parser.parse_args(argv)


def _seconds(fn, iters):
    """Median wall time of `fn()` over `iters` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _random_params(config):
    """Small random float32 params for `unet_from_config(config)`, for timing when diffusers is absent."""
    rng = np.random.default_rng(0)
    shapes = model_shapes(unet_from_config(config), config)
    return unflatten_dict({path: 0.02 * rng.standard_normal(shape, np.float32) for path, shape in shapes.items()})


def _torch_side(config, inputs, dtype, device, iters):
    """A random-weight diffusers UNet on `device`: (seconds per forward, output NHWC, its state dict).

    (None, None, None) where torch or diffusers is not installed, or torch cannot reach `device`.
    """
    try:
        import torch
        from diffusers import UNet2DConditionModel
        from diffusers.utils import logging
    except ImportError:
        return None, None, None
    if device == "cuda" and not torch.cuda.is_available():
        return None, None, None

    logging.set_verbosity_error()
    torch.manual_seed(0)
    model = UNet2DConditionModel(**diffusers_config(config)).eval()
    state = {key: value.float().numpy() for key, value in model.state_dict().items()}
    model = model.to(device=device, dtype=getattr(torch, dtype))
    x, t, ctx = (torch.from_numpy(np.asarray(a)).to(device) for a in inputs)
    x, ctx = x.permute(0, 3, 1, 2).to(model.dtype), ctx.to(model.dtype)

    def forward():
        with torch.inference_mode():
            out = model(x, t, ctx).sample
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    seconds = _seconds(forward, iters)
    out = forward().float().permute(0, 2, 3, 1).cpu().numpy()
    del model
    gc.collect()
    return seconds, out, state


def run_case(name, latent, batch, dtype, attention, iters, peak):
    """Times both sides on one (config, latent, batch) and returns a dict of figures."""
    config = load_config(f"{CONFIG_FILE}:{name}")
    rng = np.random.default_rng(0)
    inputs = (rng.standard_normal((batch, latent, latent, config.in_channels), np.float32),
              np.full((batch,), 500.0, np.float32),
              rng.standard_normal((batch, TEXT_TOKENS, config.cross_attention_dim), np.float32))
    device = "cuda" if jax.default_backend() == "gpu" else "cpu"
    torch_seconds, torch_out, state = _torch_side(config, inputs, dtype, device, iters)

    params = _random_params(config) if state is None else convert_unet(state, config)
    del state
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    config.dtype, config.attention_implementation = dtype, attention
    module = unet_from_config(config)
    args = ({"params": params},) + tuple(jnp.asarray(a) for a in inputs)
    compiled = jax.jit(module.apply).lower(*args).compile()
    ours = _seconds(lambda: compiled(*args).block_until_ready(), iters)
    out = np.asarray(compiled(*args))

    if attention == "cudnn":  # cuDNN attention is a custom call whose FLOPs XLA does not count
        config.attention_implementation = "xla"
        compiled = jax.jit(unet_from_config(config).apply).lower(*args).compile()
    flops = xla_flops(compiled)
    row = dict(config=name, latent=latent, batch=batch, dtype=dtype, attention=attention, gflop=flops / 1e9,
               ours_ms=1e3 * ours, ours_img_s=batch / ours, ours_mfu=flops / ours / peak)
    if torch_seconds is not None:
        row.update(diffusers_ms=1e3 * torch_seconds, diffusers_img_s=batch / torch_seconds,
                   diffusers_mfu=flops / torch_seconds / peak, speedup=torch_seconds / ours,
                   max_abs_diff=float(np.abs(out - torch_out).max()))
    return row


def format_row(r):
    """One printed line per case; the diffusers half reads 'unavailable' where it could not run."""
    text = (f"{r['config']:>6} {r['latent']:>3}x{r['latent']:<3} b{r['batch']:<3} {r['dtype']:>8} {r['attention']:>5} | "
            f"ours {r['ours_ms']:9.1f} ms {r['ours_img_s']:8.2f} img/s MFU {100 * r['ours_mfu']:5.1f}% | ")
    if "speedup" not in r:
        return text + f"diffusers unavailable (torch/diffusers missing or without this device) | {r['gflop']:.1f} GFLOP"
    return text + (f"diffusers {r['diffusers_ms']:9.1f} ms {r['diffusers_img_s']:8.2f} img/s "
                   f"MFU {100 * r['diffusers_mfu']:5.1f}% | speedup x{r['speedup']:.2f} | {r['gflop']:.1f} GFLOP | "
                   f"max|diff| {r['max_abs_diff']:.2e}")


def main(argv=None):
    args = _parse(argv)
    gpu = jax.default_backend() == "gpu"
    dtype = args.dtype or ("bfloat16" if gpu else "float32")
    attention = args.attention or ("cudnn" if gpu else "xla")
    if args.config:
        cases = [(args.config, args.latent or 64, b) for b in (args.batch or [1])]
    else:
        cases = GPU_CASES if gpu else CPU_CASES
    peak = peak_flops(jnp.dtype(dtype), 8192 if gpu else 1024)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); "
          f"measured peak {peak / 1e12:.2f} TFLOP/s ({dtype} matmul); speedup = diffusers time / ours")
    for name, latent, batch in cases:
        print(format_row(run_case(name, latent, batch, dtype, attention, args.iters, peak)), flush=True)
