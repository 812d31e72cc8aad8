"""The DDPM forward process: beta schedules, cumulative alphas, noising and the v-prediction target."""

import dataclasses
import functools
import math

import jax.numpy as jnp
import numpy as np

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
UNSUPPORTED = ("trained_betas", "thresholding", "rescale_betas_zero_snr")


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """A diffusion schedule with diffusers' `scheduler_config.json` field names (hashable, so jit-static).

    Defaults are DDIMScheduler's, except that clip_sample is off (latent diffusion never clips).
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    prediction_type: str = "epsilon"
    timestep_spacing: str = "leading"
    steps_offset: int = 0
    set_alpha_to_one: bool = True
    clip_sample: bool = False
    clip_sample_range: float = 1.0

    def __post_init__(self):
        for field, value, allowed in (("beta_schedule", self.beta_schedule, BETA_SCHEDULES),
                                      ("prediction_type", self.prediction_type, PREDICTION_TYPES),
                                      ("timestep_spacing", self.timestep_spacing, TIMESTEP_SPACINGS)):
            if value not in allowed:
                raise ValueError(f"{field} must be one of {allowed}, got {value!r}")

    @classmethod
    def from_dict(cls, values):
        """From a mapping such as a diffusers scheduler_config.json, ignoring keys this class lacks.

        Options it does not implement (trained betas, thresholding, zero-SNR rescaling) raise a ValueError.
        """
        values = dict(values)
        for key in UNSUPPORTED:
            if values.get(key):
                raise ValueError(f"unsupported scheduler option: {key}={values[key]!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


SD15 = SchedulerConfig(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                       steps_offset=1, set_alpha_to_one=False)


def _cosine_betas(num_steps, max_beta=0.999):
    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta)
                     for i in range(num_steps)])


def betas(config):
    """Per-step betas as float32, computed the way diffusers computes them."""
    n = config.num_train_timesteps
    if config.beta_schedule == "linear":
        return np.linspace(config.beta_start, config.beta_end, n).astype(np.float32)
    if config.beta_schedule == "scaled_linear":
        roots = np.linspace(config.beta_start ** 0.5, config.beta_end ** 0.5, n).astype(np.float32)
        return roots * roots
    return _cosine_betas(n).astype(np.float32)


@functools.lru_cache(maxsize=16)
def alphas_cumprod(config):
    """Cumulative product of (1 - beta) as float32 (read-only; cached per config).

    As in diffusers: alphas rounded to float32, the product accumulated in float64 (torch's CPU cumprod).
    """
    alphas = np.float32(1.0) - betas(config)
    table = np.cumprod(alphas.astype(np.float64)).astype(np.float32)
    table.flags.writeable = False
    return table


def _levels(config, timesteps, like):
    """sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) at integer `timesteps`, shaped to broadcast over `like`."""
    compute = jnp.promote_types(like.dtype, jnp.float32)
    alpha_bar = jnp.asarray(alphas_cumprod(config), compute)[jnp.asarray(timesteps)]
    alpha_bar = alpha_bar.reshape(alpha_bar.shape + (1,) * (like.ndim - alpha_bar.ndim))
    return jnp.sqrt(alpha_bar), jnp.sqrt(1 - alpha_bar)


def add_noise(config, samples, noise, timesteps):
    """q(x_t | x_0): sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise; `timesteps` scalar or (batch,)."""
    signal, sigma = _levels(config, timesteps, samples)
    return (signal * samples + sigma * noise).astype(samples.dtype)


def velocity(config, samples, noise, timesteps):
    """The v-prediction target sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x_0."""
    signal, sigma = _levels(config, timesteps, samples)
    return (signal * noise - sigma * samples).astype(samples.dtype)
