"""Strips outputs and execution counts from notebooks, in place.

  python colab/strip_outputs.py colab/*.ipynb

Notebooks are committed without outputs (tests/notebooks_test.py checks);
CI executes them.
"""

import sys

import nbformat


def strip(path: str) -> bool:
  """Strips one notebook; returns whether it changed."""
  nb = nbformat.read(path, as_version=4)
  changed = False
  for cell in nb.cells:
    if cell.cell_type == "code" and (cell.outputs or cell.execution_count):
      cell.outputs, cell.execution_count = [], None
      changed = True
  if changed:
    nbformat.write(nb, path)
  return changed


if __name__ == "__main__":
  for p in sys.argv[1:]:
    print(("stripped " if strip(p) else "clean    ") + p)
