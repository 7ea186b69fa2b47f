"""Every zoo variant on a (2, 2, 2) mesh of 8 CPU devices against one device, in a
subprocess (tests/train/variants_mesh_probe.py). Apart from test_distributed.py so that
pytest-xdist (--dist loadfile) can run it beside that file's long subprocess tests."""

import json
import subprocess
import sys

from tests.train.test_distributed import ENV, ROOT
from titans_jax.models import VARIANTS


def test_every_variant_on_a_2x2x2_mesh_gives_one_devices_loss_and_gradients():
  # Given each zoo variant (2 layers), its loss and gradients on data x fsdp x tensor = 2 x 2 x 2
  probe = subprocess.run([sys.executable, "tests/train/variants_mesh_probe.py"], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=400)
  assert probe.returncode == 0, probe.stderr[-3000:]
  report = json.loads(probe.stdout.split("PROBE ", 1)[1])
  # Then they are one device's, to float32 rounding (a mis-partitioning is off by O(1))
  assert sorted(report) == sorted(VARIANTS)
  for variant, difference in report.items():
    assert difference["loss"] < 1e-5 and difference["grad"] < 1e-4, (variant, difference)
