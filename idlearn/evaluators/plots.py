"""Pictures of a re-ID model: ranked galleries, CMC, embedding maps, curves.

Figures are built with matplotlib's object API on the Agg canvas (no
pyplot, no display, no global backend switch), so this works in scripts,
CI and notebooks alike; a notebook shows a returned `Figure` once
`%matplotlib inline` has registered IPython's PNG formatter.

  ranking = plots.rank_gallery(qf, q["id"], q["cam"], gf, g["id"], g["cam"])
  fig = plots.retrieval_grid(q["image"], g["image"], ranking, [0, 5, 9])
  fig.savefig("grid.png")

Rankings follow the Market-1501 protocol of `reid.evaluate`: gallery entries
with the query's id *and* camera are removed (this drops the query itself
when query and gallery are the same set).
"""

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

GREEN = (0, 170, 0)  # frame of a correct match
RED = (220, 0, 0)  # frame of a wrong match
GREY = (128, 128, 128)  # frame of the query
BLUE = (0, 90, 220)  # frame of the first true match in a failure row
_CHUNK_ELEMENTS = 1 << 22  # distances per query chunk in rank_gallery
TITLE_PX = 26  # white rows above each grid row for the cell captions
GAP_PX = 6  # white pixels between cells


class Ranking(NamedTuple):
  """Top-k gallery entries per query after the Market-1501 removal.

  index: [q, k] gallery indices, nearest first; -1 past the kept gallery.
  dist: [q, k] their distances (inf where index is -1).
  correct: [q, k] gallery id == query id.
  first_true: [q] 0-based rank of the nearest true match in the whole kept
    gallery (-1: none left).
  first_true_index: [q] its gallery index (-1: none).
  first_true_dist: [q] its distance (inf: none).
  """

  index: np.ndarray
  dist: np.ndarray
  correct: np.ndarray
  first_true: np.ndarray
  first_true_index: np.ndarray
  first_true_dist: np.ndarray


def distances(
  query_feats: Any, gallery_feats: Any, *, metric: str = "cosine"
) -> np.ndarray:
  """[q, d], [g, d] features -> [q, g] float64 distances (smaller = closer).

  "cosine" gives 1 - cos (features L2-normalised), "euclidean" the L2
  distance.
  """
  q = np.asarray(query_feats, np.float64)
  g = np.asarray(gallery_feats, np.float64)
  if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
    raise ValueError(
      f"query_feats and gallery_feats must be [q, d] and [g, d], got "
      f"{q.shape} and {g.shape}"
    )
  if metric == "cosine":
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    return 1.0 - q @ g.T
  if metric == "euclidean":
    sq = (q**2).sum(1)[:, None] + (g**2).sum(1)[None] - 2 * q @ g.T
    return np.sqrt(np.maximum(sq, 0.0))
  raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")


def rank_gallery(
  query_feats: Any,
  query_ids: Any,
  query_cams: Any,
  gallery_feats: Any,
  gallery_ids: Any,
  gallery_cams: Any,
  *,
  metric: str = "cosine",
  top_k: int = 10,
) -> Ranking:
  """Ranks the gallery for every query, keeping the top `top_k`.

  Queries are processed in row chunks (about 32 MiB of distances each) and
  only the top entries are sorted, so a Market-1501-sized set (3k x 16k)
  takes seconds.

  Args:
    query_feats: [q, d] features; query_ids, query_cams: [q] labels.
    gallery_feats: [g, d]; gallery_ids, gallery_cams: [g] labels.
    metric: "cosine" or "euclidean" (as `reid.evaluate`).
    top_k: entries kept per query.
  Returns:
    A `Ranking`; ties are broken by gallery index.
  """
  qf, gf = np.asarray(query_feats), np.asarray(gallery_feats)
  qi, qc = np.asarray(query_ids), np.asarray(query_cams)
  gi, gc = np.asarray(gallery_ids), np.asarray(gallery_cams)
  if qi.shape != (len(qf),) or qc.shape != qi.shape:
    raise ValueError(f"query_ids/query_cams must have shape ({len(qf)},)")
  if gi.shape != (len(gf),) or gc.shape != gi.shape:
    raise ValueError(f"gallery_ids/gallery_cams must have shape ({len(gf)},)")
  if not len(gf) or top_k < 1:
    raise ValueError(
      f"need a non-empty gallery and top_k >= 1, got {len(gf)} gallery "
      f"entries and top_k={top_k}"
    )
  k = min(top_k, len(gf))
  chunk = max(1, _CHUNK_ELEMENTS // len(gf))
  parts = [
    _rank_chunk(
      distances(qf[i : i + chunk], gf, metric=metric),
      qi[i : i + chunk], qc[i : i + chunk], gi, gc, k,
    )
    for i in range(0, len(qf), chunk)
  ]  # fmt: skip
  return Ranking(*(np.concatenate(p) for p in zip(*parts, strict=True)))


def _rank_chunk(dist, qi, qc, gi, gc, k) -> Ranking:
  """Ranking of one query chunk from its [c, g] distances."""
  same_id = qi[:, None] == gi[None]  # [c, g]
  dist[same_id & (qc[:, None] == gc[None])] = np.inf  # removed entries
  cols = np.arange(dist.shape[1])
  # Nearest true match: lowest distance, then lowest index (argmin's rule).
  true_dist = np.where(same_id, dist, np.inf)
  first_index = true_dist.argmin(axis=1)  # [c]
  rows = np.arange(len(qi))
  first_dist = true_dist[rows, first_index]
  # Its rank: kept entries ordered before it by (distance, index).
  d, ix = first_dist[:, None], first_index[:, None]
  first = ((dist < d) | ((dist == d) & (cols < ix))).sum(axis=1)
  none = ~np.isfinite(first_dist)
  first[none], first_index[none] = -1, -1
  # Top k: partition, then sort the k by (distance, index); rows with ties
  # at the k-th distance take the full stable sort instead.
  cand = np.argpartition(dist, k - 1, axis=1)[:, :k]  # [c, k]
  cand_dist = np.take_along_axis(dist, cand, axis=1)
  kth = cand_dist.max(axis=1, keepdims=True)
  exact = (dist == kth).sum(1) == (cand_dist == kth).sum(1)
  order = np.lexsort((cand, cand_dist), axis=1)
  index = np.take_along_axis(cand, order, axis=1)
  for r in np.flatnonzero(~exact):
    index[r] = np.argsort(dist[r], kind="stable")[:k]
  top_dist = np.take_along_axis(dist, index, axis=1)
  index = np.where(np.isfinite(top_dist), index, -1)
  correct = (gi[index] == qi[:, None]) & (index >= 0)
  return Ranking(index, top_dist, correct, first, first_index, first_dist)


def pick_queries(
  ranking: Ranking, query_ids: Any, num: int, *, seed: int = 0
) -> np.ndarray:
  """`num` queries with a true match left, distinct ids where possible.

  Returns: int [<= num] query indices, seeded (same picture every run).
  """
  ids = np.asarray(query_ids)
  valid = np.flatnonzero(ranking.first_true >= 0)
  rng = np.random.default_rng(seed)
  valid = valid[rng.permutation(len(valid))]
  _, first = np.unique(ids[valid], return_index=True)  # one per identity
  picked = valid[np.sort(first)][:num]
  if len(picked) < num:  # fewer ids than rows: fill with other queries
    rest = np.setdiff1d(valid, picked, assume_unique=True)
    picked = np.concatenate([picked, rest[: num - len(picked)]])
  return picked


def hardest_failures(ranking: Ranking, num: int) -> np.ndarray:
  """Queries whose rank-1 match is wrong, worst first.

  Worst = the largest gap between the nearest true match and the (wrong)
  rank-1 entry, i.e. how far the model prefers a wrong identity.
  Returns: int [<= num] query indices.
  """
  wrong = np.flatnonzero((ranking.first_true > 0) & ~ranking.correct[:, 0])
  gap = ranking.first_true_dist[wrong] - ranking.dist[wrong, 0]
  return wrong[np.argsort(-gap, kind="stable")][:num]


def framed(image: np.ndarray, color: Sequence[int], width: int) -> np.ndarray:
  """uint8 [h, w, 3] -> [h + 2 width, w + 2 width, 3] inside a solid frame."""
  h, w = image.shape[:2]
  out = np.empty((h + 2 * width, w + 2 * width, 3), np.uint8)
  out[:] = np.asarray(color, np.uint8)
  out[width : width + image.shape[0], width : width + image.shape[1]] = image
  return out


def _check_images(images: Any, name: str) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(
      f"{name} must be uint8 [n, h, w, 3], got {images.dtype} {images.shape}"
    )
  return images


def _grid_cells(qimg, gimg, ranking, queries, query_ids, gallery_ids, extra):
  """[(row, col, image, frame colour, caption)] of a retrieval grid."""

  def label(ids, i):
    return "" if ids is None else f" id {np.asarray(ids)[i]}"

  cells = []
  for r, qi in enumerate(queries):
    cells.append((r, 0, qimg[qi], GREY, f"query{label(query_ids, qi)}"))
    for c, gi in enumerate(ranking.index[qi]):
      if gi >= 0:
        color = GREEN if ranking.correct[qi, c] else RED
        text = f"#{c + 1}{label(gallery_ids, gi)}\nd={ranking.dist[qi, c]:.2f}"
        cells.append((r, c + 1, gimg[gi], color, text))
    gi = ranking.first_true_index[qi]
    if extra and gi >= 0:
      text = f"true @#{ranking.first_true[qi] + 1}\n"
      text += f"d={ranking.first_true_dist[qi]:.2f}"
      cells.append((r, ranking.index.shape[1] + 1, gimg[gi], BLUE, text))
  return cells


def retrieval_grid(
  query_images: Any,
  gallery_images: Any,
  ranking: Ranking,
  queries: Sequence[int],
  *,
  query_ids: Any = None,
  gallery_ids: Any = None,
  show_first_true: bool = False,
  border: int = 4,
  min_height: int = 128,
  title: str | None = None,
) -> Figure:
  """One row per query: the query, then its top-k gallery entries.

  Correct matches are framed green, wrong ones red, the query grey. With
  `show_first_true`, a last column shows the nearest true match (blue
  frame) and its rank, which explains a failure.

  The picture is one mosaic drawn at one figure pixel per mosaic pixel
  (fast to draw, exact colours). Images are upscaled by an integer factor
  s to at least `min_height` rows; cell (r, c)'s frame starts at row
  r * (s*h + 2*border + TITLE_PX + GAP_PX) + TITLE_PX and column
  c * (s*w + 2*border + GAP_PX) (plus TITLE_PX on top with a title).

  Args:
    query_images: uint8 [q, h, w, 3]; gallery_images: uint8 [g, h, w, 3].
    ranking: from `rank_gallery` on the same query/gallery order.
    queries: query indices to show, one row each.
    query_ids, gallery_ids: [q], [g] labels written above the cells.
    show_first_true: add the nearest-true-match column.
    border: frame width in pixels.
    min_height: upscale small images (nearest neighbour) to this height.
    title: figure title.
  Returns:
    The figure; `fig.axes[0].images[0].get_array()` is the mosaic.
  """
  qimg = _check_images(query_images, "query_images")
  gimg = _check_images(gallery_images, "gallery_images")
  if qimg.shape[1:] != gimg.shape[1:]:
    raise ValueError(
      f"query_images {qimg.shape[1:]} and gallery_images "
      f"{gimg.shape[1:]} must have the same image size"
    )
  queries = [int(i) for i in queries]
  if not queries:
    raise ValueError("queries is empty: give at least one query index")
  s = max(1, -(-min_height // gimg.shape[1]))
  cells = _grid_cells(
    qimg, gimg, ranking, queries, query_ids, gallery_ids, show_first_true
  )
  top = TITLE_PX if title else 0
  ch, cw = s * gimg.shape[1] + 2 * border, s * gimg.shape[2] + 2 * border
  rows, cols = len(queries), ranking.index.shape[1] + 1 + int(show_first_true)
  mosaic = np.full(
    (top + rows * (ch + TITLE_PX + GAP_PX), cols * (cw + GAP_PX), 3),
    255,
    np.uint8,
  )
  for r, c, img, color, _ in cells:
    y, x = top + r * (ch + TITLE_PX + GAP_PX) + TITLE_PX, c * (cw + GAP_PX)
    big = img.repeat(s, axis=0).repeat(s, axis=1)
    mosaic[y : y + ch, x : x + cw] = framed(big, color, border)
  dpi = 100
  fig = Figure(figsize=(mosaic.shape[1] / dpi, mosaic.shape[0] / dpi), dpi=dpi)
  ax = fig.add_axes((0, 0, 1, 1))
  ax.imshow(mosaic, interpolation="nearest")
  for r, c, _, _, text in cells:
    y, x = top + r * (ch + TITLE_PX + GAP_PX) + TITLE_PX, c * (cw + GAP_PX)
    ax.text(x + cw / 2, y - 2, text, ha="center", va="bottom", fontsize=6.5)
  if title:
    ax.text(mosaic.shape[1] / 2, 2, title, ha="center", va="top", fontsize=9)
  ax.set_axis_off()
  return fig


def plot_cmc(
  curves: Mapping[str, Any] | Any, *, title: str = "CMC", max_rank: int = 20
) -> Figure:
  """CMC curves (matching rate in % against rank 1..max_rank).

  Args:
    curves: one [r] CMC array with values in [0, 1] (e.g.
      `reid.evaluate(...)["cmc"]`), or {label: array} for several.
    max_rank: ranks shown (at most the curves' length).
  Returns:
    The figure; line i plots x = 1..n and y = 100 * curve[:n].
  """
  if not isinstance(curves, Mapping):
    curves = {"": curves}
  fig = Figure(figsize=(5, 3.6), dpi=100)
  ax = fig.subplots()
  for name, cmc in curves.items():
    cmc = np.asarray(cmc, np.float64)
    if cmc.ndim != 1 or not len(cmc):
      raise ValueError(f"CMC {name!r} must be a non-empty 1-D array")
    n = min(max_rank, len(cmc))
    label = f"{name} " if name else ""
    ax.plot(
      np.arange(1, n + 1),
      100 * cmc[:n],
      marker="o",
      markersize=3,
      label=f"{label}rank-1 {100 * cmc[0]:.1f}%",
    )
  ax.set(xlabel="rank", ylabel="matching rate (%)", title=title, ylim=(0, 101))
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  return fig


def embed_2d(
  feats: Any, *, metric: str = "cosine", perplexity: float = 30.0, seed: int = 0
) -> np.ndarray:
  """t-SNE of [n, d] features -> float64 [n, 2] (scikit-learn, PCA init).

  With "cosine" the features are L2-normalised first, so the map shows the
  geometry retrieval uses. Perplexity is capped at (n - 1) / 3.
  """
  from sklearn.manifold import TSNE
  from threadpoolctl import threadpool_limits

  x = np.asarray(feats, np.float64)
  if x.ndim != 2 or len(x) < 4:
    raise ValueError(f"feats must be [n >= 4, d], got shape {x.shape}")
  if metric == "cosine":
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  elif metric != "euclidean":
    raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
  tsne = TSNE(
    n_components=2,
    perplexity=min(perplexity, (len(x) - 1) / 3),
    init="pca",
    random_state=seed,
  )
  # One OpenMP thread: on a busy machine scikit-learn's spinning OpenMP
  # threads made a 192-point map 15x slower (24 s vs 1.6 s on 2 cores).
  with threadpool_limits(1, user_api="openmp"):
    return tsne.fit_transform(x)


def embedding_map(
  points: Any,
  ids: Any,
  *,
  images: Any = None,
  thumb_zoom: float = 0.25,
  title: str = "t-SNE of embeddings, coloured by identity",
) -> Figure:
  """Scatter of 2-D points coloured by identity (optionally thumbnails).

  Args:
    points: [n, 2], e.g. from `embed_2d`.
    ids: [n] identity labels.
    images: optional uint8 [n, h, w, 3]: drawn at the points, framed in
      their identity's colour.
    thumb_zoom: thumbnail scale.
  Returns:
    The figure; its first collection holds the points in input order.
  """
  from matplotlib import colormaps
  from matplotlib.offsetbox import AnnotationBbox, OffsetImage

  pts, ids = np.asarray(points, np.float64), np.asarray(ids)
  if pts.ndim != 2 or pts.shape[1] != 2 or ids.shape != (len(pts),):
    raise ValueError(
      f"points must be [n, 2] and ids [n], got {pts.shape}, {ids.shape}"
    )
  _, code = np.unique(ids, return_inverse=True)
  cmap = colormaps["tab20"] if code.max() < 20 else colormaps["hsv"]
  colors = cmap(code / max(code.max(), 1) if code.max() >= 20 else code)
  fig = Figure(figsize=(6, 6), dpi=100)
  ax = fig.subplots()
  ax.scatter(pts[:, 0], pts[:, 1], c=colors, s=18)
  if images is not None:
    images = _check_images(images, "images")
    for p, img, col in zip(pts, images, colors, strict=True):
      rgb = (255 * np.asarray(col[:3])).astype(int)
      box = OffsetImage(framed(img, rgb, 8), zoom=thumb_zoom)
      ax.add_artist(AnnotationBbox(box, p, frameon=False, pad=0))
  ax.set(title=title, xticks=[], yticks=[])
  fig.tight_layout()
  return fig


def read_metrics(path: str | os.PathLike) -> dict[str, tuple]:
  """metrics.jsonl -> {name: (steps int [m], values float [m])}.

  A step logged twice (a resumed run) keeps its later value.
  """
  rows: dict[str, dict[int, float]] = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        rec = json.loads(line)
        step = int(rec.pop("step"))
        for k, v in rec.items():
          rows.setdefault(k, {})[step] = float(v)
  out = {}
  for k, by_step in rows.items():
    steps = np.array(sorted(by_step), np.int64)
    out[k] = (steps, np.array([by_step[s] for s in steps]))
  return out


def plot_curves(
  metrics: Mapping[str, tuple], keys: Sequence[str] = ("train/loss",)
) -> Figure:
  """Training curves, one panel per key, from `read_metrics`' output."""
  missing = [k for k in keys if k not in metrics]
  if missing:
    raise ValueError(f"keys {missing} not in metrics; have {sorted(metrics)}")
  fig = Figure(figsize=(4.5 * len(keys), 3.2), dpi=100)
  axes = fig.subplots(1, len(keys), squeeze=False)[0]
  for ax, key in zip(axes, keys, strict=True):
    steps, values = metrics[key]
    ax.plot(steps, values)
    ax.set(xlabel="step", title=key)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  return fig


def write_eval_pictures(
  directory: str | os.PathLike,
  query: Mapping[str, Any],
  gallery: Mapping[str, Any],
  query_feats: Any,
  gallery_feats: Any,
  *,
  cmc: Any = None,
  metric: str = "cosine",
  num_queries: int = 6,
  top_k: int = 10,
  prefix: str = "",
  seed: int = 0,
) -> dict[str, str]:
  """Writes retrieval_grid.png, failure_cases.png and cmc.png.

  Args:
    directory: where to write (created if needed).
    query, gallery: dicts with "image" uint8 [n, h, w, 3], "id" [n] and
      "cam" [n] (as `idlearn.data.reid_eval_sets` returns them).
    query_feats, gallery_feats: [q, d], [g, d] features of those images.
    cmc: the CMC curve of these features (computed with `reid.evaluate`
      when None).
    metric: "cosine" or "euclidean".
    num_queries: rows of the grids.
    top_k: gallery entries per row.
    prefix: prepended to the file names (e.g. "pku_reid_").
    seed: picks the grid's queries.
  Returns:
    {"retrieval_grid": path, "cmc": path, "failure_cases": path}; the
    failure picture only when some query's rank-1 match is wrong.
  """
  ranking = rank_gallery(
    query_feats, query["id"], query["cam"], gallery_feats, gallery["id"],
    gallery["cam"], metric=metric, top_k=top_k,
  )  # fmt: skip
  if cmc is None:
    from idlearn.evaluators import reid

    cmc = reid.evaluate(
      query_feats, query["id"], query["cam"], gallery_feats, gallery["id"],
      gallery["cam"], metric=metric,
    )["cmc"]  # fmt: skip
  kw = dict(query_ids=query["id"], gallery_ids=gallery["id"])
  figs = {
    "retrieval_grid": retrieval_grid(
      query["image"], gallery["image"], ranking,
      pick_queries(ranking, query["id"], num_queries, seed=seed),
      title="query and top matches (green: same id, red: other id)", **kw,
    ),
    "cmc": plot_cmc(cmc),
  }  # fmt: skip
  failures = hardest_failures(ranking, num_queries)
  if len(failures):
    figs["failure_cases"] = retrieval_grid(
      query["image"], gallery["image"], ranking, failures,
      show_first_true=True, title="hardest failures (blue: nearest true "
      "match)", **kw,
    )  # fmt: skip
  os.makedirs(directory, exist_ok=True)
  paths = {}
  for name, fig in figs.items():
    paths[name] = os.path.join(os.fspath(directory), f"{prefix}{name}.png")
    fig.savefig(paths[name])
  return paths
