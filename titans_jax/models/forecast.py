"""SiMBA for multivariate time series with the LMM as its sequence mixer (Titans Table 3).

Titans (section 5.4, Table 3) "replaces Mamba with our neural memory" inside SiMBA
(Patro & Agneeswaran 2024, "SiMBA: Simplified Mamba-based Architecture for Vision and
Multivariate Time series") and gives no other detail. SiMBA's block is

    x = x + SequenceMixer(Norm(x))      # Mamba in SiMBA; the LMM block here
    x = x + EinFFT(Norm(x))             # SiMBA's channel mixer

What we rebuilt from the SiMBA paper, and what is our choice:

- SiMBA (kept): pre-norm residual blocks of [LayerNorm -> sequence mixer -> residual ->
  LayerNorm -> EinFFT -> residual]; EinFFT as SiMBA defines it: an FFT over the
  sequence and the channel blocks (`fft2`, "ortho"), a two-layer complex block-diagonal
  MLP on the spectrum (Einstein products per block, ReLU between), a soft-shrink of
  the result (sparsity threshold 0.01), the inverse FFT, real part; weights drawn as
  0.02 x N(0, 1), 4 channel blocks.
- Titans (kept): the sequence mixer is `models.memory_block.MemoryBlock`, the LMM
  block of spec section 2 (q / k / v projections, causal conv, gates, memory, output
  norm and gate), run from its learned initial memory on every window.
- Ours (the SiMBA paper does not pin these down as far as we know; config fields):
  the time-series front end follows PatchTST, which the TSLib long-term benchmark
  uses: each variable's lookback (channel independence) cut into patches of
  `patch_len` with stride `patch_stride` (16 / 8; the series is padded at its end by
  repeating its last value `patch_stride` times, PatchTST's `padding_patch="end"`),
  a linear patch embedding, no positional embedding (the LMM's conv and recurrence are
  order-aware, as Mamba is), a final LayerNorm, and a linear head from the flattened
  patches to the horizon. Instance normalisation (`revin`: subtract each window's
  per-variable mean, divide by its std, undo on the output) as TSLib's models do
  (`use_norm`). No dropout / drop-path. No persistent tokens (the LMM block alone).

Shapes: inputs [B, lookback, C] -> outputs [B, horizon, C]; the blocks see
[B * C, patches, width].

The model section of an experiment config holds every `ModelConfig` field (the LMM's
width, heads, memory settings; `input_dim` = `output_dim` = C) plus the fields of
`FORECAST_DEFAULTS`; `config.model_builder = "titans_jax.models.forecast:build_forecaster"`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from titans_jax.models import layers
from titans_jax.models.config import ModelConfig
from titans_jax.models.memory_block import MemoryBlock

# Fields of the model section that are the forecaster's, not ModelConfig's.
FORECAST_DEFAULTS = dict(lookback=96, horizon=96, patch_len=16, patch_stride=8, revin=True,
                         einfft_blocks=4, einfft_threshold=0.01)
EINFFT_INIT_SCALE = 0.02  # SiMBA's EinFFT: scale * randn
REVIN_EPS = 1e-5  # TSLib's use_norm: sqrt(var + 1e-5)


@dataclasses.dataclass(frozen=True)
class ForecastConfig:
  """The forecaster: the LMM's ModelConfig plus the time-series front end and EinFFT."""
  model: ModelConfig
  lookback: int = 96
  horizon: int = 96
  patch_len: int = 16
  patch_stride: int = 8
  revin: bool = True
  einfft_blocks: int = 4
  einfft_threshold: float = 0.01

  def __post_init__(self):
    validate(self)

  @property
  def channels(self) -> int:
    return self.model.input_dim

  @property
  def num_patches(self) -> int:
    """PatchTST with end padding: (lookback + stride - patch_len) // stride + 1."""
    return (self.lookback + self.patch_stride - self.patch_len) // self.patch_stride + 1


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


def validate(config: ForecastConfig) -> None:
  """Plain-value checks, before anything is built."""
  m = config.model
  _require(m.variant == "lmm", f"model.variant={m.variant!r}; the forecaster's sequence mixer is "
           "the LMM block, expected model.variant='lmm'")
  _require(m.input_dim >= 1, f"model.input_dim={m.input_dim}; expected the number of variables "
           "of the series (e.g. 7 for ETTh1)")
  _require(m.output_dim == m.input_dim, f"model.output_dim={m.output_dim} but model.input_dim="
           f"{m.input_dim}; the forecaster predicts every input variable (features 'M'), expected "
           f"model.output_dim={m.input_dim}")
  for name in ("lookback", "horizon", "patch_len", "patch_stride", "einfft_blocks"):
    value = getattr(config, name)
    _require(isinstance(value, int) and value >= 1, f"model.{name}={value!r} must be an int >= 1")
  _require(config.patch_len <= config.lookback, f"model.patch_len={config.patch_len} is longer "
           f"than model.lookback={config.lookback}; expected patch_len <= lookback")
  _require(m.width % config.einfft_blocks == 0, f"model.width={m.width} is not divisible by "
           f"model.einfft_blocks={config.einfft_blocks}; expected a divisor of the width (e.g. 4)")
  _require(config.einfft_threshold >= 0, f"model.einfft_threshold={config.einfft_threshold} must "
           "be >= 0 (SiMBA: 0.01)")


def forecast_config(fields) -> ForecastConfig:
  """A model section (ConfigDict or dict: ModelConfig fields + FORECAST_DEFAULTS keys)."""
  fields = dict(fields.to_dict() if hasattr(fields, "to_dict") else fields)
  own = {name: fields.pop(name, default) for name, default in FORECAST_DEFAULTS.items()}
  known = {field.name for field in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(fields) - known)
  _require(not unknown, f"model fields {unknown} are neither ModelConfig fields nor forecaster "
           f"fields {tuple(FORECAST_DEFAULTS)}")
  return ForecastConfig(model=ModelConfig(**fields), **own)


class LayerNorm(nnx.Module):
  """LayerNorm (SiMBA's norm) in float32, with logical axis names for the sharding rules."""

  def __init__(self, dim: int, config: ModelConfig):
    _, params = layers.dtypes(config)
    self.eps = config.norm_eps
    self.scale = layers.param(jnp.ones((dim,), params), ("norm",))
    self.bias = layers.param(jnp.zeros((dim,), params), ("norm",))

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    centred = x32 - jnp.mean(x32, axis=-1, keepdims=True)
    normed = centred * jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + self.eps)
    return (normed * self.scale[...] + self.bias[...]).astype(x.dtype)


class EinFFT(nnx.Module):
  """SiMBA's channel mixer: spectral gating by a block-diagonal complex MLP.

  x [N, T, width] is viewed as [N, T, blocks, width / blocks]; fft2 over (T, blocks);
  two complex Einstein products per block (ReLU on the real and imaginary parts of the
  first); soft-shrink (sparsity); ifft2; the real part. Why the FFT: a product in the
  frequency domain mixes all positions at O(T log T), and the block-diagonal weights
  keep the channel mixing at width^2 / blocks parameters.
  """

  def __init__(self, width: int, blocks: int, threshold: float, config: ModelConfig,
               rngs: nnx.Rngs):
    _, params = layers.dtypes(config)
    self.blocks, self.block = blocks, width // blocks
    self.threshold = threshold
    draw = lambda shape: EINFFT_INIT_SCALE * jax.random.normal(rngs.params(), shape, params)
    names = (None, None, None, None)
    # [real / imaginary, block, in, out] and [real / imaginary, block, out]
    self.w1 = layers.param(draw((2, blocks, self.block, self.block)), names)
    self.b1 = layers.param(draw((2, blocks, self.block)), names[:3])
    self.w2 = layers.param(draw((2, blocks, self.block, self.block)), names)
    self.b2 = layers.param(draw((2, blocks, self.block)), names[:3])

  @staticmethod
  def _complex_dense(real, imag, w, b):
    """(real + i imag) @ (w[0] + i w[1]) + (b[0] + i b[1]), per block."""
    product = lambda x, weights: jnp.einsum("...bd,bdk->...bk", x, weights)
    return (product(real, w[0]) - product(imag, w[1]) + b[0],
            product(real, w[1]) + product(imag, w[0]) + b[1])

  def __call__(self, x):
    n, length, width = x.shape
    spectrum = jnp.fft.fft2(x.astype(jnp.float32).reshape(n, length, self.blocks, self.block),
                            axes=(1, 2), norm="ortho")
    w1, b1, w2, b2 = (p[...].astype(jnp.float32) for p in (self.w1, self.b1, self.w2, self.b2))
    real, imag = self._complex_dense(spectrum.real, spectrum.imag, w1, b1)
    real, imag = self._complex_dense(jax.nn.relu(real), jax.nn.relu(imag), w2, b2)
    shrink = lambda z: jnp.sign(z) * jnp.maximum(jnp.abs(z) - self.threshold, 0.0)
    mixed = jnp.fft.ifft2(jax.lax.complex(shrink(real), shrink(imag)), axes=(1, 2), norm="ortho")
    return mixed.real.reshape(n, length, width).astype(x.dtype)


class SimbaBlock(nnx.Module):
  """x + LMM(LayerNorm(x)), then x + EinFFT(LayerNorm(x)): SiMBA's block, LMM for Mamba."""

  def __init__(self, config: ForecastConfig, rngs: nnx.Rngs):
    m = config.model
    self.mixer_norm = LayerNorm(m.width, m)
    self.mixer = MemoryBlock(m, rngs)
    self.channel_norm = LayerNorm(m.width, m)
    self.channel_mixer = EinFFT(m.width, config.einfft_blocks, config.einfft_threshold, m, rngs)

  def __call__(self, x):
    # Each window is its own sequence: the memory starts from its learned W_0.
    mixed, _ = self.mixer(self.mixer_norm(x), self.mixer.init_cache(x.shape[0]))
    x = x + mixed
    return x + self.channel_mixer(self.channel_norm(x))


class SimbaForecaster(nnx.Module):
  """inputs [B, lookback, C] -> forecasts [B, horizon, C] (float32)."""

  def __init__(self, config: ForecastConfig, rngs: nnx.Rngs):
    self.config = config
    m = config.model
    self.patch_embed = layers.dense(m, config.patch_len, m.width, (None, "embed"), rngs, bias=True)
    self.blocks = nnx.List([SimbaBlock(config, rngs) for _ in range(m.num_layers)])
    self.final_norm = LayerNorm(m.width, m)
    self.head = layers.dense(m, config.num_patches * m.width, config.horizon, (None, None), rngs,
                             bias=True)

  def check_inputs(self, inputs) -> None:
    c = self.config
    expected = (c.lookback, c.channels)
    if inputs.ndim != 3 or tuple(inputs.shape[1:]) != expected or not jnp.issubdtype(
        inputs.dtype, jnp.floating):
      raise ValueError(f"inputs have shape {tuple(inputs.shape)} and dtype {inputs.dtype}; "
                       f"expected floats [batch, lookback={c.lookback}, variables={c.channels}]")

  def patches(self, series):
    """[N, lookback] -> [N, patches, patch_len] (PatchTST: end padding by the last value)."""
    c = self.config
    padded = jnp.concatenate([series, jnp.repeat(series[:, -1:], c.patch_stride, axis=1)], axis=1)
    starts = jnp.arange(c.num_patches) * c.patch_stride
    return padded[:, starts[:, None] + jnp.arange(c.patch_len)[None, :]]

  def __call__(self, inputs):
    self.check_inputs(inputs)
    c = self.config
    x = inputs.astype(jnp.float32)
    if c.revin:  # per window and variable, undone on the output
      mean = jnp.mean(x, axis=1, keepdims=True)
      std = jnp.sqrt(jnp.var(x, axis=1, keepdims=True) + REVIN_EPS)
      x = (x - mean) / std
    batch, _, channels = x.shape
    series = jnp.transpose(x, (0, 2, 1)).reshape(batch * channels, c.lookback)  # channel independence
    h = self.patch_embed(self.patches(series).astype(c.model.dtype))
    for block in self.blocks:
      h = block(h)
    h = self.final_norm(h)
    out = self.head(h.reshape(batch * channels, -1)).astype(jnp.float32)  # [B * C, horizon]
    out = jnp.transpose(out.reshape(batch, channels, c.horizon), (0, 2, 1))
    if c.revin:
      out = out * std + mean
    return out


def build_forecaster(model_config, rngs: nnx.Rngs) -> SimbaForecaster:
  """train.py's model_builder hook: the model section -> SimbaForecaster."""
  return SimbaForecaster(forecast_config(model_config), rngs)
