"""notebooks/quickstart.ipynb runs top to bottom (shortened by TITANS_NOTEBOOK_QUICK=1),
so the notebook most users meet never rots."""

import json
import os

import matplotlib

NOTEBOOK = os.path.join(os.path.dirname(__file__), os.pardir, "notebooks", "quickstart.ipynb")


def test_the_quickstart_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
  # Given the notebook's code cells, shortened, with a fresh workdir
  matplotlib.use("Agg")
  monkeypatch.setenv("TITANS_NOTEBOOK_QUICK", "1")
  monkeypatch.setenv("TITANS_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
  with open(NOTEBOOK) as handle:
    cells = [cell for cell in json.load(handle)["cells"] if cell["cell_type"] == "code"]
  namespace = {"__name__": "__notebook__"}
  # When every cell runs in order in one namespace (as a kernel would)
  for index, cell in enumerate(cells):
    source = "".join(cell["source"])
    assert not any(line.lstrip().startswith(("!", "%")) for line in source.splitlines()), (
        f"cell {index} uses shell/magic syntax; keep cells plain Python so they run anywhere")
    exec(compile(source, f"quickstart.ipynb[cell {index}]", "exec"), namespace)
  # Then it trained, evaluated, traced and generated, leaving its pictures behind
  assert namespace["result"].step == 4
  assert os.path.getsize(namespace["paths"]["png"]) > 0
  assert os.path.getsize(namespace["png"]) > 0
  assert len(namespace["answer"]) == len(namespace["sample"]["answer"])
