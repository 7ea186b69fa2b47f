"""The tiny TinyLM config, as an experiment file for subprocess tests of main.py.

  python -m titans_jax.main --config=tests/train/tiny_experiment.py --workdir=/tmp/tiny
"""

from tests.train.tiny_model import tiny_config


def get_config():
  config = tiny_config()
  config.model_builder = "tests.train.tiny_model:build_tiny"
  return config
