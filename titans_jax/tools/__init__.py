"""Small command-line tools (python -m titans_jax.tools.<name>)."""
