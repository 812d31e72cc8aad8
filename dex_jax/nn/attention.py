"""Multi-head dot-product attention through jax.nn.dot_product_attention, cuDNN where it can run."""

import functools

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = (None, "xla", "cudnn")
_HALF_DTYPES = (jnp.bfloat16, jnp.float16)


@functools.cache
def _gpu_compute_capability():
    """(major, minor) of the first GPU, or None when JAX sees no CUDA GPU."""
    try:
        device = jax.devices("gpu")[0]
    except RuntimeError:
        return None
    capability = getattr(device, "compute_capability", None)
    if capability is None:
        return None
    return tuple(int(part) for part in capability.split("."))


def cudnn_head_dim_limit():
    """The largest head dim cuDNN flash attention takes here: 256 on Hopper or later, 128 before, 0 without a GPU."""
    capability = _gpu_compute_capability()
    if capability is None:
        return 0
    return 256 if capability >= (9, 0) else 128


def resolve_implementation(implementation, q):
    """The backend that actually runs: 'cudnn' only for bf16/fp16 on a GPU whose limits allow the head dim.

    `None` and 'xla' give 'xla'; 'cudnn' gives 'cudnn' where cuDNN flash attention supports the
    query's dtype and head dim (a multiple of 8, at most `cudnn_head_dim_limit()`), and 'xla' elsewhere.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if implementation != "cudnn":
        return "xla"
    head_dim = q.shape[-1]
    supported = (q.dtype in _HALF_DTYPES and head_dim % 8 == 0 and head_dim <= cudnn_head_dim_limit())
    return "cudnn" if supported else "xla"


def dot_product_attention(q, k, v, implementation=None, kv_lengths=None):
    """softmax(q k^T / sqrt(D)) v for q (B, Lq, H, D), k and v (B, Lk, H, D); returns (B, Lq, H, D).

    `kv_lengths` (B,) int: row b attends only to its first kv_lengths[b] keys (None: to all Lk).
    """
    backend = resolve_implementation(implementation, q)
    return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=kv_lengths, implementation=backend)
