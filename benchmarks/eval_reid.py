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
"""

import argparse
import importlib.util
import os
import pathlib
import resource
import subprocess
import sys
import time
import warnings

import numpy as np

from idlearn.evaluators import reid

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
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.child:
    return rss_child(a.rss_size, a.noise)
  print(blas_info(), f"| cores {os.cpu_count()}", flush=True)
  if not a.rss_only:
    bench_market(a)
  if not a.no_rss:
    cmd = [sys.executable, __file__, "--child", f"--rss-size={a.rss_size}"]
    subprocess.run(cmd + [f"--noise={a.noise}"], check=True)


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
