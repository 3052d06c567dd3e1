"""What you train leaves idlearn, end to end on the bundled data: train ->
embed -> export -> score -> evaluate, through the command line, each output
checked against the same computation in Python."""

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import idlearn
from idlearn import data
from idlearn.commands import score
from idlearn.data import folders
from idlearn.evaluators import reid, verification
from idlearn.inference import export

_ROOT = Path(__file__).resolve().parents[2]
BUNDLED = _ROOT / "idlearn" / "data" / "bundled"


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=os.fspath(_ROOT))
  out = subprocess.run(
    [sys.executable, "-m", "idlearn.main", *args],
    cwd=_ROOT, env=env, capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A 2-step faces run (FaceNet, flip test on, verification threshold)."""
  w = tmp_path_factory.mktemp("run")
  _cli(
    "train", "--config=configs/facenet_att_faces.py:smoke", f"--workdir={w}",
    "--config.eval_at_start=False",
  )  # fmt: skip
  return w


@pytest.mark.slow
def test_embed_skips_a_corrupt_file_and_matches_load(workdir, tmp_path):
  images = tmp_path / "images"
  shutil.copytree(BUNDLED / "att_faces" / "s30", images / "s30")
  (images / "s30" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
  out = _cli("embed", f"--model={workdir}", f"--images={images}",
             f"--output={tmp_path / 'f.npz'}")  # fmt: skip
  assert "skipped" in out.stderr and "broken.jpg" in out.stderr
  saved = np.load(tmp_path / "f.npz")
  assert len(saved["paths"]) == 10 and len(saved["failed"]) == 1
  embedder = idlearn.load(workdir)
  want = embedder.embed([images / p for p in saved["paths"]])
  np.testing.assert_allclose(saved["features"], want, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(want, axis=1), 1.0, atol=1e-5)
  assert embedder.threshold is not None  # from the verification eval


@pytest.mark.slow
def test_export_stablehlo_then_reload(workdir, tmp_path):
  path = tmp_path / "faces.shlo"
  _cli("export", f"--model={workdir}", "--format=stablehlo", f"--output={path}")
  embedder = idlearn.load(workdir, checkpoint="final")
  x = data.load_split("att_faces", "test", image_size=embedder.image_size)
  x = x["image"][:7]
  np.testing.assert_allclose(
    export.load_stablehlo(os.fspath(path))(x), embedder.embed(x), atol=1e-5
  )


@pytest.mark.slow
def test_score_identity_similarity(workdir, tmp_path):
  ref, gen = tmp_path / "ref", tmp_path / "gen"
  for subject in ("s29", "s33", "s35"):
    files = sorted((BUNDLED / "att_faces" / subject).glob("*.pgm"))
    (ref / subject).mkdir(parents=True)
    (gen / subject).mkdir(parents=True)
    for f in files[:3]:
      shutil.copy(f, ref / subject)
    for f in files[3:]:
      shutil.copy(f, gen / subject)
  out = _cli(
    "score",
    f"--model={workdir}",
    f"--reference={ref}",
    f"--generated={gen}",
    f"--output={tmp_path / 's.csv'}",
  )
  embedder = idlearn.load(workdir)
  rows = list(csv.DictReader(open(tmp_path / "s.csv")))
  assert len(rows) == 21
  gen_paths = [r["generated"] for r in rows]
  ref_paths = sorted(str(p) for p in ref.rglob("*.pgm"))
  want = score.identity_scores(
    embedder.embed(ref_paths),
    [score.identity_of(p, os.fspath(ref)) for p in ref_paths],
    embedder.embed(gen_paths),
    [r["identity"] for r in rows],
  )
  np.testing.assert_allclose([float(r["similarity"]) for r in rows], want,
                             atol=1e-5)  # fmt: skip
  shown = float(re.search(r"identity similarity ([\d.-]+)", out.stdout)[1])
  assert abs(shown - want.mean()) < 1e-4
  above = float(re.search(r"above threshold [\d.-]+: ([\d.]+)%", out.stdout)[1])
  assert abs(above - 100 * np.mean(want >= embedder.threshold)) < 0.1


@pytest.mark.slow
def test_evaluate_reid_folders_and_verification_pairs(workdir, tmp_path):
  market = BUNDLED / "market1501_mini"
  out = _cli("evaluate", f"--model={workdir}", f"--query={market / 'query'}",
             f"--gallery={market / 'bounding_box_test'}")  # fmt: skip
  embedder = idlearn.load(workdir)
  q = folders.reid_set(os.fspath(market / "query"))
  g = folders.reid_set(os.fspath(market / "bounding_box_test"))
  qi, gi = folders.encode(q["id"], g["id"])
  qc, gc = folders.encode(q["cam"], g["cam"])
  res = reid.evaluate(embedder.embed(q["path"]), qi, qc,
                      embedder.embed(g["path"]), gi, gc)  # fmt: skip
  shown = float(
    re.search(r"(?m)^data +rank1 +trained +([\d.]+)", out.stdout)[1]
  )
  assert abs(shown - 100 * res["rank1"]) < 0.06
  # verification: the held-out AT&T subjects' pairs as a CSV
  pairs = data.verification_pairs("att_faces")
  meta = data.split_meta(data.prepare("att_faces"), pairs["split"])
  root = BUNDLED / "att_faces"
  with open(tmp_path / "pairs.csv", "w") as f:
    f.write("path1,path2,same,fold\n")
    for i, j, s, k in zip(pairs["index1"], pairs["index2"], pairs["same"],
                          pairs["fold"], strict=True):  # fmt: skip
      f.write(
        f"{root / meta['path'][i]},{root / meta['path'][j]},{int(s)},{k}\n"
      )
  out = _cli(
    "evaluate", f"--model={workdir}", f"--pairs={tmp_path / 'pairs.csv'}"
  )
  p1 = [root / meta["path"][i] for i in pairs["index1"]]
  p2 = [root / meta["path"][i] for i in pairs["index2"]]
  f1, f2 = embedder.embed(p1), embedder.embed(p2)
  res = verification.evaluate(f1, f2, pairs["same"], fold_ids=pairs["fold"])
  shown = float(
    re.search(r"(?m)^data +accuracy +trained +([\d.]+)", out.stdout)[1]
  )
  assert abs(shown - 100 * res["accuracy"]) < 0.06
