r"""Re-ID evaluation speed and memory: idlearn vs torchreid vs a NumPy loop.

  python benchmarks/eval_reid.py [--repeats 3] [--torchreid-queries 3368]
  python benchmarks/eval_reid.py --rss-only --rss-size 100000

A Market-1501-sized problem (3,368 queries x 15,913 gallery, 512-d float32
features, 750 identities + 2,798 distractors, 6 cameras): features are an
identity centre + a camera offset + noise (`--noise` sets the difficulty;
the printed mAP says how hard it is). Every method gets the same features
and is timed end to end: cosine distances, ranking and metrics.
- idlearn: `reid.evaluate` (chunked float32 matmul, candidate ranking in
  a thread overlapping the next chunk's matmul; and without that thread).
- NumPy loop: full float32 distance matrix, then per query a stable argsort
  and the Market-1501 metrics (the straightforward same-semantics code).
- torchreid: the same distance matrix, then its Python `evaluate_rank`
  (loaded from its file; its Cython build is not in the wheel). With
  --torchreid-queries < 3368 it runs on the first queries only and the time
  is scaled up linearly (both of its phases are per query).
Times are wall seconds, best of --repeats (the machine may be shared; the
load average and each method's CPU seconds are printed too).
Peak RSS: a fresh subprocess runs `reid.evaluate` on --rss-size queries x
--rss-size gallery 512-d features and reports ru_maxrss (features included).

Retrieval at scale (`--no-scale` skips it; `--scale-only` runs only it),
each row in a fresh subprocess, peak RSS = ru_maxrss (inputs included):
- kNN (`knn.evaluate`, k=200) of 10k queries against a 100k gallery, exact
  NumPy vs faiss-cpu flat (`neighbors.search`), with the top-1 of each;
- k-reciprocal re-ranking (`reranking.rerank`, k1=20, k2=6) of a pooled
  N=32k (3k queries + 29k gallery); the dense original (torchreid's
  `re_ranking`, several N^2 matrices) is measured at N=4k and 8k and its
  peak extrapolated to 32k as a + b N^2: it does not fit this machine;
- DomainMix pseudo labels on MSMT17's size (32,621 images, 1,041 ids):
  dense [n, n] Jaccard (`jaccard_distance`, what the miner used to build)
  vs sparse within DBSCAN's radius + DBSCAN (`domainmix_pseudo_labels`);
  the dense miner is measured at 8k and extrapolated.
  python benchmarks/eval_reid.py --scale-only
"""

import argparse
import importlib.util
import json
import os
import pathlib
import resource
import subprocess
import sys
import time
import warnings

import numpy as np

from idlearn.evaluators import knn, neighbors, reid, reranking
from idlearn.mining import pseudo_labels

NQ, NG, NDISTRACT, NID, NCAM, DIM = 3368, 15913, 2798, 750, 6, 512


def make_problem(nq, ng, n_distract, n_id, dim, noise, seed=0):
  """Identity centres + camera offsets + noise; id 0 = distractors."""
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((n_id + 1, dim), np.float32)
  cam_bias = 0.5 * rng.standard_normal((NCAM, dim), np.float32)
  q_ids = rng.integers(1, n_id + 1, nq)
  g_ids = np.concatenate(
    [
      rng.integers(1, n_id + 1, ng - n_distract),
      np.zeros(n_distract, np.int64),
    ]
  )
  q_cams, g_cams = rng.integers(0, NCAM, nq), rng.integers(0, NCAM, ng)

  def feats(ids, cams):
    out = np.empty((len(ids), dim), np.float32)
    for s in range(0, len(ids), 8192):  # bounded temporaries
      i, c = ids[s : s + 8192], cams[s : s + 8192]
      x = noise * rng.standard_normal((len(i), dim), np.float32)
      x += np.where((i > 0)[:, None], centres[i], 0) + cam_bias[c]
      out[s : s + 8192] = x
    return out

  return (
    feats(q_ids, q_cams),
    q_ids,
    q_cams,
    feats(g_ids, g_cams),
    g_ids,
    g_cams,
  )


def cosine_distances(q, g):
  qn = q / np.linalg.norm(q, axis=1, keepdims=True)
  gn = g / np.linalg.norm(g, axis=1, keepdims=True)
  return 1.0 - qn @ gn.T  # [q, g] float32


def numpy_loop(q, q_ids, q_cams, g, g_ids, g_cams, max_rank=50):
  """Straightforward per-query evaluation with the same semantics."""
  dist = cosine_distances(q, g)
  cmc, aps = np.zeros(max_rank), []
  for i in range(len(q)):
    order = np.argsort(dist[i], kind="stable")
    same = g_ids[order] == q_ids[i]
    hit = same[~(same & (g_cams[order] == q_cams[i]))]
    if not hit.any():
      continue
    where = np.flatnonzero(hit)
    cmc[where[0] :] += 1
    aps.append(np.mean(np.arange(1, len(where) + 1) / (where + 1.0)))
  return {"mAP": float(np.mean(aps)), "rank1": cmc[0] / len(aps)}


def torchreid_eval(q, q_ids, q_cams, g, g_ids, g_cams, max_rank=50):
  spec = importlib.util.find_spec("torchreid")
  path = pathlib.Path(spec.submodule_search_locations[0])
  path = path / "reid" / "metrics" / "rank.py"
  mod_spec = importlib.util.spec_from_file_location("_tr_rank", path)
  mod = importlib.util.module_from_spec(mod_spec)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    mod_spec.loader.exec_module(mod)
  dist = cosine_distances(q, g)
  cmc, m_ap = mod.evaluate_rank(
    dist, q_ids, g_ids, q_cams, g_cams, max_rank=max_rank, use_cython=False
  )
  return {"mAP": float(m_ap), "rank1": float(cmc[0])}


def timed(fn, repeats):
  best, cpu, out = float("inf"), None, None
  for _ in range(repeats):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    if wall < best:
      best, cpu = wall, time.process_time() - c0
  return best, cpu, out


def rss_child(n, noise):
  """Runs in a fresh process: 100k x 100k-style evaluation, prints RSS."""
  t0 = time.perf_counter()
  args = make_problem(n, n, 0, n // 20, DIM, noise, seed=1)
  t1 = time.perf_counter()
  out = reid.evaluate(*args, max_rank=50)
  t2 = time.perf_counter()
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB
  print(
    f"RSS {n}x{n}: peak {peak:.2f} GiB (features {2 * n * DIM * 4 / 2**30:.2f}"
    f" GiB), make {t1 - t0:.0f} s, evaluate {t2 - t1:.0f} s, "
    f"mAP {out['mAP']:.3f}",
    flush=True,
  )


def _peak_gib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _torchreid_rerank():
  spec = importlib.util.find_spec("torchreid")
  path = pathlib.Path(spec.submodule_search_locations[0])
  path = path / "reid" / "utils" / "rerank.py"
  mod_spec = importlib.util.spec_from_file_location("_tr_rerank", path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  return mod.re_ranking


def _euclid(a, b):
  sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T
  return np.sqrt(np.maximum(sq, 0.0))


def scale_child(job, noise):
  """Runs in a fresh process: one retrieval-at-scale row, prints JSON."""
  kind, _, arg = job.partition(":")
  t0 = time.perf_counter()
  row = {"job": job}
  if kind == "knn":  # arg: exact | faiss
    q, q_ids, _, g, g_ids, _ = make_problem(  # noise 4: not trivial
      10_000, 100_000, 0, 1_000, DIM, 4.0, seed=2
    )
    in_gib = (q.nbytes + g.nbytes) / 2**30
    neighbors.FAISS_MIN_PAIRS = 0 if arg == "faiss" else 1 << 62
    t0 = time.perf_counter()
    out = knn.evaluate(g, g_ids, q, q_ids, k=200)
    row["result"] = f"top-1 {out['top1']:.4f}, top-5 {out['top5']:.4f}"
  elif kind in ("rerank", "torchreid"):  # arg: pooled N
    n = int(arg)
    nq = n * 3 // 32
    q, _, _, g, _, _ = make_problem(nq, n - nq, 0, n // 31, DIM, noise, seed=3)
    in_gib = (q.nbytes + g.nbytes) / 2**30
    t0 = time.perf_counter()
    if kind == "rerank":
      dist = reranking.rerank(q, g, metric="cosine")
    else:
      qn = q / np.linalg.norm(q, axis=1, keepdims=True)
      gn = g / np.linalg.norm(g, axis=1, keepdims=True)
      blocks = _euclid(qn, gn), _euclid(qn, qn), _euclid(gn, gn)
      dist = _torchreid_rerank()(*blocks, k1=20, k2=6, lambda_value=0.3)
    row["result"] = f"[{nq}, {n - nq}] out, mean {float(dist.mean()):.4f}"
  else:  # jaccard-dense | jaccard-sparse | miner-dense | miner-sparse; :N
    n = int(arg)
    _, _, _, f, _, _ = make_problem(0, n, 0, n * 1041 // 32621, DIM, noise, 4)
    in_gib = f.nbytes / 2**30
    t0 = time.perf_counter()
    if kind.startswith("jaccard"):
      dist = reranking.jaccard_distance(
        f, k1=30, k2=6, sparse=kind.endswith("sparse"), max_distance=0.62
      )
      stored = dist.nnz if kind.endswith("sparse") else dist.size
      row["result"] = f"{stored / n:.1f} stored distances per image"
    else:
      labels, info = pseudo_labels.domainmix_pseudo_labels(
        f, k1=30, k2=6, eps=0.6, sparse=kind.endswith("sparse")
      )
      row["result"] = (
        f"{info['num_clusters']} clusters, {info['num_dropped']} dropped"
      )
  row.update(wall=time.perf_counter() - t0, peak=_peak_gib(), inputs=in_gib)
  print(json.dumps(row), flush=True)


def _run_child(job, noise):
  cmd = [sys.executable, __file__, f"--child={job}", f"--noise={noise}"]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def bench_scale(a):
  """Retrieval-at-scale rows (module docstring), one subprocess each."""
  rows = []

  def run(name, job, problem):
    r = _run_child(job, a.noise)
    rows.append((name, problem, f"{r['wall']:.1f}", f"{r['peak']:.2f}",
                 f"{r['inputs']:.2f}", r["result"]))  # fmt: skip
    print(rows[-1], flush=True)
    return r

  knn_problem = "10k queries x 100k gallery, 512-d, k=200, noise 4"
  run("kNN, exact NumPy", "knn:exact", knn_problem)
  if importlib.util.find_spec("faiss") is not None:
    run("kNN, faiss-cpu IndexFlatIP", "knn:faiss", knn_problem)
  for name, job, big in (
    ("re-ranking, dense (torchreid)", "torchreid", 32768),
    ("DomainMix miner, dense Jaccard", "miner-dense", 32621),
  ):
    small = [
      (n, run(name, f"{job}:{n}", f"N={n}")["peak"]) for n in (4096, 8192)
    ]
    rows.append(_extrapolate(name, small, big))
  run("re-ranking, idlearn sparse", "rerank:32768", "N=32768")
  for name, job in (
    ("Jaccard [n, n], dense", "jaccard-dense"),
    ("Jaccard within 0.62, sparse", "jaccard-sparse"),
    ("DomainMix miner, sparse Jaccard", "miner-sparse"),
  ):
    run(name, f"{job}:32621", "N=32621")
  print("\n| row | problem | wall s | peak RSS GiB | inputs GiB | result |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    print("| " + " | ".join(r) + " |")


def _extrapolate(name, measured, n):
  """Peak RSS at n as a + b N^2 through two measured (N, peak) points."""
  (n0, p0), (n1, p1) = measured
  peak = p0 + (p1 - p0) / (n1**2 - n0**2) * (n**2 - n0**2)
  ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
  note = f"not run (machine: {ram:.0f} GiB); a + b N^2 through {n0}, {n1}"
  return f"{name}, estimate", f"N={n}", "-", f"~{peak:.1f}", "-", note


def blas_info():
  env = {
    k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
  }
  try:
    import threadpoolctl

    info = [
      f"{d['internal_api']} {d.get('architecture')} x{d['num_threads']}"
      for d in threadpoolctl.threadpool_info()
    ]
  except ImportError:
    info = ["threadpoolctl not installed"]
  return f"BLAS: {', '.join(info)}; env {env}"


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--noise", type=float, default=1.8)
  p.add_argument("--torchreid-queries", type=int, default=NQ)
  p.add_argument("--rss-size", type=int, default=100_000)
  p.add_argument("--rss-only", action="store_true")
  p.add_argument("--no-rss", action="store_true")
  p.add_argument("--no-peers", action="store_true", help="idlearn rows only")
  p.add_argument("--no-scale", action="store_true")
  p.add_argument("--scale-only", action="store_true")
  p.add_argument("--child", default="", help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.child == "rss":
    return rss_child(a.rss_size, a.noise)
  if a.child:
    return scale_child(a.child, a.noise)
  print(blas_info(), f"| cores {os.cpu_count()}", flush=True)
  if not (a.rss_only or a.scale_only):
    bench_market(a)
  if not (a.no_rss or a.scale_only):
    cmd = [sys.executable, __file__, "--child=rss", f"--rss-size={a.rss_size}"]
    subprocess.run(cmd + [f"--noise={a.noise}"], check=True)
  if not (a.no_scale or a.rss_only):
    bench_scale(a)


def bench_market(a):
  args = make_problem(NQ, NG, NDISTRACT, NID, DIM, a.noise)
  print(f"load average before: {os.getloadavg()}", flush=True)
  rows = []
  for name, fn, reps in (
    ("idlearn reid.evaluate", lambda: reid.evaluate(*args), a.repeats),
    (
      "idlearn, no ranking thread",
      lambda: reid.evaluate(*args, num_threads=0),
      a.repeats,
    ),
    ("NumPy per-query loop", lambda: numpy_loop(*args), 0 if a.no_peers else 1),
  ):
    if reps:
      rows.append((name, *timed(fn, reps), 1.0))
  k = a.torchreid_queries
  if not a.no_peers:
    sub = tuple(x[:k] for x in args[:3]) + args[3:]
    wall, cpu, out = timed(lambda: torchreid_eval(*sub), 1)
    name = "torchreid evaluate_rank (Python)"
    rows.append((name, wall, cpu, out, NQ / k))
  print(f"load average after: {os.getloadavg()}\n")
  print(
    "| method | wall s | CPU s | mAP | rank-1 | vs torchreid-Cython 3.86 s |"
  )
  print("|---|---|---|---|---|---|")
  for name, wall, cpu, out, scale in rows:
    note = f" (x{scale:.2f} from {k} queries)" if scale != 1.0 else ""
    print(
      f"| {name}{note} | {wall * scale:.2f} | {cpu * scale:.2f} | "
      f"{out['mAP']:.4f} | {out['rank1']:.4f} | {3.86 / (wall * scale):.1f}x |"
    )


if __name__ == "__main__":
  main()
