"""Pictures of a re-ID model: ranked galleries, CMC, embedding maps, curves.

Figures are built with matplotlib's object API on the Agg canvas (no
pyplot, no display, no global backend switch), so this works in scripts,
CI and notebooks alike; a notebook shows a returned `Figure` once
`%matplotlib inline` has registered IPython's PNG formatter.

  ranking = plots.rank_gallery(qf, q["id"], q["cam"], gf, g["id"], g["cam"])
  fig = plots.retrieval_grid(q["image"], g["image"], ranking, [0, 5, 9])
  fig.savefig("grid.png")

Rankings (`idlearn.evaluators.ranking`, re-exported here) follow the
Market-1501 protocol of `reid.evaluate`.
"""

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# The rankings the pictures show (re-exported: plots.rank_gallery(...)).
from idlearn.evaluators.ranking import (
  Ranking,
  distances,  # noqa: F401 (public: plots.distances)
  hardest_failures,
  pick_queries,
  rank_gallery,
)

GREEN = (0, 170, 0)  # frame of a correct match
RED = (220, 0, 0)  # frame of a wrong match
GREY = (128, 128, 128)  # frame of the query
BLUE = (0, 90, 220)  # frame of the first true match in a failure row
TITLE_PX = 26  # white rows above each grid row for the cell captions
GAP_PX = 6  # white pixels between cells


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
