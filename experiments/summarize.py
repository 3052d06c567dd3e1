r"""Tables of finished runs: untrained vs trained metrics from each workdir.

  python experiments/summarize.py runs/ssl/*_s0 runs/ssl/*_s1
  python experiments/summarize.py --metrics rank1,mAP,camnorm/rank1 \
      --mean-over-seeds runs/ssl/*

Reads `<workdir>/metrics.jsonl` (the step-0 evaluation is the untrained
model, the last one the trained model) and, when the run was launched as
`/usr/bin/time -v python -m idlearn.main ... > <workdir>.log`, the wall
time from `<workdir>.log`. With --mean-over-seeds, runs whose names differ
only in a trailing `_s<seed>` are averaged (and the seeds listed).
"""

import argparse
import collections
import json
import os
import re


def read_run(workdir: str) -> dict:
  """{"untrained": {...}, "trained": {...}, "step": int, "wall": str}."""
  evals = []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      rec = json.loads(line)
      scores = {k: v for k, v in rec.items() if k.startswith("eval/")}
      if scores:
        evals.append((rec["step"], scores))
  if not evals:
    raise ValueError(f"{workdir}: no evaluation in metrics.jsonl")
  untrained = next((s for step, s in evals if step == 0), {})
  step, trained = evals[-1]
  wall = ""
  log = workdir.rstrip("/") + ".log"
  if os.path.exists(log):
    m = re.search(
      r"Elapsed \(wall clock\) time.*?: ([\d:.]+)", open(log).read()
    )
    wall = m.group(1).split(".")[0] if m else ""
  return {
    "untrained": untrained,
    "trained": trained,
    "step": step,
    "wall": wall,
  }


def _value(scores: dict, metric: str) -> float | None:
  """The first score named `metric` ("rank1"), or `<eval>/<metric>`."""
  for key, v in scores.items():
    if key == f"eval/{metric}" or key.split("/", 2)[2] == metric:
      return 100.0 * v
  return None


def _cell(values) -> str:
  values = [v for v in values if v is not None]
  return f"{sum(values) / len(values):.1f}" if values else "-"


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("workdirs", nargs="+")
  p.add_argument("--metrics", default="rank1,mAP")
  p.add_argument("--mean-over-seeds", action="store_true")
  args = p.parse_args()
  metrics = args.metrics.split(",")
  groups = collections.OrderedDict()
  for w in args.workdirs:
    if not os.path.isdir(w):
      continue
    name = os.path.basename(w.rstrip("/"))
    key = re.sub(r"_s\d+$", "", name) if args.mean_over_seeds else name
    groups.setdefault(key, []).append((name, read_run(w)))
  head = ["run", "n"] + [f"untrained {m}" for m in metrics]
  head += [f"trained {m}" for m in metrics] + ["steps", "wall"]
  print("| " + " | ".join(head) + " |")
  print("|" + "---|" * len(head))
  for key, runs in groups.items():
    row = [key, str(len(runs))]
    for which in ("untrained", "trained"):
      row += [_cell([_value(r[which], m) for _, r in runs]) for m in metrics]
    row += [str(runs[0][1]["step"]), " / ".join(r["wall"] for _, r in runs)]
    print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
  main()
