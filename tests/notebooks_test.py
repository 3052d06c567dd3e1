"""Executes the colab/ notebooks top to bottom with nbclient (CI runs them).

The kernel gets this checkout on PYTHONPATH (so the notebooks' setup cell
installs nothing), one CPU device (not the 8 fake ones of conftest.py) and
a temporary run directory shared by 01 and 02, which run in that order in
one test (02 loads the model 01 trains).
"""

import base64
import io
import os
import pathlib
import re

import nbformat
import numpy as np
import pytest
from PIL import Image
from subprocess_env import one_device_env

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLAB = ROOT / "colab"
NOTEBOOKS = [
  "01_quickstart.ipynb",
  "02_retrieval_gallery.ipynb",
  "03_import_pretrained.ipynb",
]


def _kernel_env(workdir: pathlib.Path) -> dict[str, str]:
  env = one_device_env()
  env["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
  )
  env["IDLEARN_NOTEBOOK_WORKDIR"] = str(workdir)
  return env


def _execute(name: str, env: dict[str, str]) -> nbformat.NotebookNode:
  from nbclient import NotebookClient

  nb = nbformat.read(COLAB / name, as_version=4)
  client = NotebookClient(
    nb,
    timeout=600,
    kernel_name="python3",
    resources={"metadata": {"path": str(COLAB)}},
  )
  client.execute(env=env)  # raises CellExecutionError on a failing cell
  return nb


def _outputs(nb, kind):
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      if kind == "text" and out.output_type == "stream":
        yield out.text
      elif kind == "png" and "image/png" in out.get("data", {}):
        yield Image.open(io.BytesIO(base64.b64decode(out.data["image/png"])))


def _rank1(text: str, name: str) -> float:
  match = re.search(rf"(?m)^\s*{name}: rank-1 ([\d.]+)%", text)
  assert match, f"no '{name}: rank-1' line in the output"
  return float(match.group(1))


def test_committed_notebooks_have_no_outputs():
  for name in NOTEBOOKS:
    nb = nbformat.read(COLAB / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
      if cell.cell_type == "code":
        assert not cell.outputs and cell.execution_count is None, name


@pytest.mark.slow
def test_quickstart_then_retrieval_gallery(tmp_path):
  env = _kernel_env(tmp_path / "run")
  nb = _execute("01_quickstart.ipynb", env)
  text = "".join(_outputs(nb, "text"))
  # Trained on 62 identities, ranked on 12 others: well above chance.
  assert _rank1(text, "trained") > _rank1(text, "untrained") + 10
  pngs = list(_outputs(nb, "png"))
  assert len(pngs) == 2  # training curves, CMC
  assert (tmp_path / "run" / "metrics.jsonl").is_file()

  nb = _execute("02_retrieval_gallery.ipynb", env)
  text = "".join(_outputs(nb, "text"))
  assert "training it" not in text  # reused 01's checkpoint
  pngs = list(_outputs(nb, "png"))
  assert len(pngs) == 3  # top-10 grid, t-SNE map, failures
  for name in ("retrieval_grid", "cmc", "failure_cases"):
    assert (tmp_path / "run" / "pictures" / f"{name}.png").is_file()
  # The grid shows six queries with 10 matches each, framed green or red.
  grid = np.asarray(pngs[0].convert("RGB"))
  green = (np.abs(grid.astype(int) - (0, 170, 0)).sum(-1) < 40).sum()
  red = (np.abs(grid.astype(int) - (220, 0, 0)).sum(-1) < 40).sum()
  assert green > 0 and red > 0


@pytest.mark.slow
def test_import_pretrained(tmp_path):
  nb = _execute("03_import_pretrained.ipynb", _kernel_env(tmp_path))
  text = "".join(_outputs(nb, "text"))
  err = float(re.search(r"max\|torch\| = ([\d.e+-]+)", text).group(1))
  assert err < 1e-4  # the notebook asserts it too
  assert "same outputs: True" in text
  assert len(list(_outputs(nb, "png"))) == 2  # CMC, retrieval grid
