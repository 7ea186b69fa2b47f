"""Parameter counts of the size presets, per variant (from shapes; nothing allocated).

    python -m titans_jax.tools.param_count                      # every size x variant
    python -m titans_jax.tools.param_count --sizes=760M --variants=mac,mag
"""

from __future__ import annotations

from absl import app, flags

from titans_jax.models import presets

_SIZES = flags.DEFINE_list("sizes", list(presets.SIZES), "Size presets to count.")
_VARIANTS = flags.DEFINE_list(
    "variants", ["transformer", "swa", "lmm", "mac", "mag", "mal", "ttt", "deltanet"],
    "Variants (or baseline presets) to count.")
TOLERANCE = 0.05


def table(sizes, variants) -> list[dict]:
  rows = []
  for size in sizes:
    for variant in variants:
      config = presets.model_config(size, variant)
      count = presets.count_parameters(config)
      target = presets.TARGETS[size]
      rows.append(dict(size=size, variant=variant, layers=config.num_layers, width=config.width,
                       heads=config.num_heads, mlp_hidden=config.mlp_hidden, params=count,
                       deviation=count / target - 1))
  return rows


def format_table(rows) -> str:
  lines = [f"{'size':>5} {'variant':>11} {'layers':>6} {'width':>5} {'heads':>5} {'mlp':>5} "
           f"{'params':>12} {'vs size':>8}"]
  for r in rows:
    flag = "" if abs(r["deviation"]) <= TOLERANCE else "  (outside 5%)"
    lines.append(f"{r['size']:>5} {r['variant']:>11} {r['layers']:>6} {r['width']:>5} {r['heads']:>5} "
                 f"{r['mlp_hidden']:>5} {r['params'] / 1e6:>11.1f}M {100 * r['deviation']:>+7.2f}%{flag}")
  return "\n".join(lines)


def main(argv):
  del argv
  for size in _SIZES.value:
    if size not in presets.SIZES:
      raise app.UsageError(f"--sizes: {size!r} is unknown; expected some of {list(presets.SIZES)}")
  print(format_table(table(_SIZES.value, _VARIANTS.value)))


if __name__ == "__main__":
  app.run(main)
