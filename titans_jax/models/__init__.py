"""The model zoo: Titans (LMM, MAC, MAG, MAL) and their baselines as Flax NNX modules.

Math lives in `titans_jax.ops`; these modules own the parameters and call it.
"""

from titans_jax.models.config import MEMORY_VARIANTS, VARIANTS, ModelConfig
from titans_jax.models.lm import TitansLM, build_layer, build_model
from titans_jax.models.presets import BASELINES, SIZES, model_config

__all__ = ["ModelConfig", "VARIANTS", "MEMORY_VARIANTS", "TitansLM", "build_layer", "build_model",
           "BASELINES", "SIZES", "model_config"]
