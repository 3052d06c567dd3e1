"""grain training loaders: random, P x K and consecutive-frame-pair batches.

The loader is a pure function of (seed, step): global position `i` of the
stream lies in epoch `i // epoch_len`, whose order is drawn from
`np.random.default_rng([seed, epoch])`. Global batch `s` is positions
`s * B .. s * B + B - 1`; process `p` of `c` reads rows `p * b .. p * b + b`
of it (b = B // c), so the processes together see exactly the one-process
batch and each reads only its shard. Resuming is `it.set_state(state)`.
"""

from __future__ import annotations

import re

import grain
import numpy as np
from absl import flags

from idlearn.data import datasets, sources
from idlearn.errors import DataError

_STREAM_LEN = 2**62  # "forever": grain wants a length; epochs repeat.


class _RandomPlan:
  """Each epoch is a permutation of all records."""

  def __init__(self, n: int, seed: int):
    self.epoch_len, self.seed = n, seed

  def epoch(self, e: int) -> np.ndarray:
    return np.random.default_rng([self.seed, e]).permutation(self.epoch_len)


class _PKPlan:
  """Each epoch: every identity once (shuffled) with k of its images.

  An identity with fewer than k images repeats some; identities left over
  after the last full batch of P wait for the next epoch. With fewer than
  P identities and `repeat_ids`, an epoch is ceil(P / #ids) shuffles of
  them (one identity then fills several of a batch's P slots).
  """

  def __init__(
    self, ids: np.ndarray, k: int, p: int, seed: int, repeat_ids=False
  ):
    valid = ids >= 0  # junk (-1) has no identity to group by
    self.groups = [np.flatnonzero(ids == i) for i in np.unique(ids[valid])]
    n = len(self.groups)
    if n < p and not (repeat_ids and n):
      raise DataError(
        f"sampler='pk' needs P = global_batch_size // k = {p} identities "
        f"per batch but the split has {n}"
      )
    self.k, self.p, self.seed = k, p, seed
    self.shuffles = -(-p // n) if n < p else 1
    self.epoch_len = (self.shuffles * n // p) * p * k

  def epoch(self, e: int) -> np.ndarray:
    rng = np.random.default_rng([self.seed, e])
    n = len(self.groups)
    order = np.concatenate([rng.permutation(n) for _ in range(self.shuffles)])
    order = order[: self.epoch_len // self.k]
    rows = [
      rng.choice(g, self.k, replace=len(g) < self.k)
      for g in (self.groups[i] for i in order)
    ]
    return np.concatenate(rows)


class _PairPlan:
  """Each epoch is a permutation of all consecutive-frame pairs."""

  def __init__(self, pairs: np.ndarray, seed: int):
    self.pairs, self.seed, self.epoch_len = pairs, seed, len(pairs)

  def epoch(self, e: int) -> np.ndarray:
    perm = np.random.default_rng([self.seed, e]).permutation(self.epoch_len)
    return self.pairs[perm]


class _CameraPairPlan:
  """Each epoch: every record once (shuffled), each with a random record of
  another camera (cross-camera pairs, no identity labels used)."""

  def __init__(self, cams: np.ndarray, seed: int):
    self.cams, self.seed, self.epoch_len = cams, seed, len(cams)
    self.by_cam = {c: np.flatnonzero(cams == c) for c in np.unique(cams)}
    if len(self.by_cam) < 2:
      raise DataError(
        "sampler='camera_pairs' needs images of at least 2 cameras, the "
        f"split has cameras {sorted(self.by_cam)}"
      )

  def epoch(self, e: int) -> np.ndarray:
    rng = np.random.default_rng([self.seed, e])
    anchors = rng.permutation(self.epoch_len)
    partners = np.empty_like(anchors)
    for c in self.by_cam:  # anchors of camera c draw from the other cameras
      rows = np.flatnonzero(self.cams[anchors] == c)
      others = np.flatnonzero(self.cams != c)
      partners[rows] = rng.choice(others, size=len(rows))
    return np.stack([anchors, partners], 1)


class _Stream:
  """Local position j -> record index (or index pair) of this process."""

  def __init__(
    self, plan, local_batch: int, process_index: int, process_count: int
  ):
    self.plan, self.b = plan, local_batch
    self.p, self.c = process_index, process_count
    self._cached = (None, None)

  def __len__(self) -> int:
    return _STREAM_LEN

  def __getitem__(self, j: int):
    step, r = divmod(int(j), self.b)
    pos = (step * self.c + self.p) * self.b + r
    e, o = divmod(pos, self.plan.epoch_len)
    if self._cached[0] != e:
      self._cached = (e, self.plan.epoch(e))
    return self._cached[1][o]


class _Load:
  """Record index (or pair of indices) -> example dict of NumPy arrays."""

  def __init__(self, source, meta: dict, size: tuple[int, int]):
    self.source, self.meta, self.size = source, meta, tuple(size)

  def _one(self, i: int) -> np.ndarray:
    return sources.decode(self.source[int(i)]["image"], self.size)

  def __call__(self, index) -> dict:
    if np.ndim(index) == 1:  # a frame pair, or a cross-camera pair
      i = int(index[0])
      out = {
        "image": np.stack([self._one(index[0]), self._one(index[1])]),
        "cam": self.meta["cam"][i],
        "id": self.meta["id"][i],
        "index": np.asarray(index, np.int32),
        "pair_id": self.meta["id"][index].astype(np.int32),
        "pair_cam": self.meta["cam"][index].astype(np.int32),
      }
      if "tracklet" in self.meta:
        out["tracklet"] = self.meta["tracklet"][i]
      return out
    i = int(index)
    out = {
      "image": self._one(i),
      "id": self.meta["id"][i],
      "label": self.meta["label"][i],
      "cam": self.meta["cam"][i],
      "index": np.int32(i),
    }
    for key in ("tracklet", "frame", "domain"):  # video sets; domains
      if key in self.meta:
        out[key] = self.meta[key][i]
    return out


def frame_pairs(meta: dict, gap: int = 1) -> np.ndarray:
  """int [m, 2] record pairs (t, t + gap) of consecutive frames in a tracklet.

  Args:
    meta: `split_meta` of a video split (tracklet, frame int [n]).
    gap: distance in the frame order of the tracklet.
  """
  order = np.lexsort((meta["frame"], meta["tracklet"]))  # [n] by (t, frame)
  tr = meta["tracklet"][order]
  same = tr[:-gap] == tr[gap:]
  return np.stack([order[:-gap][same], order[gap:][same]], 1).astype(np.int64)


def domain_labels(
  paths: np.ndarray, pattern: str
) -> tuple[np.ndarray, list[str]]:
  """The domain of each record from its path: group 1 of `pattern`.

  E.g. r"/(pku_reid|market1501)_[^/]+/[^/]+$" on the `<dataset>_<identity>`
  folders a `config.select` pool writes: the data set each image came from.

  Args:
    paths: str [n] record paths (`split_meta(...)["path"]`).
    pattern: a regex searched in each path; its first group names the
      domain.
  Returns:
    (int32 [n] domain index = position of the name among the sorted
    distinct names, the sorted names).
  Raises:
    DataError: a path the pattern does not match, or a pattern without a
      group.
  """
  regex = re.compile(pattern)
  if regex.groups < 1:
    raise DataError(f"domain_pattern={pattern!r}: needs a group (...)")
  names = []
  for path in paths:
    m = regex.search(str(path))
    if m is None:
      raise DataError(
        f"{path}: domain_pattern={pattern!r} does not match it (group 1 "
        "names the record's domain)"
      )
    names.append(m.group(1))
  distinct = sorted(set(names))
  index = {n: i for i, n in enumerate(distinct)}
  return np.asarray([index[n] for n in names], np.int32), distinct


def make_train_loader(
  *,
  name: str,
  split: str,
  image_size: tuple[int, int],
  global_batch_size: int,
  sampler: str = "random",
  k: int = 4,
  seed: int = 0,
  num_workers: int = 0,
  process_index: int = 0,
  process_count: int = 1,
  data_dir: str | None = None,
  manual_dir: str | None = None,
  num_threads: int = 8,
  frame_gap: int = 1,
  group_by: str = "id",
  labels: np.ndarray | None = None,
  pairs: np.ndarray | None = None,
  repeat_ids: bool = False,
  domain_pattern: str = "",
) -> grain.IterDataset:
  """Endless, deterministic, resumable training batches of one split.

  Args:
    name, split: dataset (see `datasets.BUILDERS`) and split.
    image_size: (h, w) every image is resized to (bilinear, on the host).
    global_batch_size: batch over all processes; this process yields
      b = global_batch_size // process_count rows.
    sampler: "random" (shuffled records), "pk" (P = b // k identities x k
      images, rows of one identity consecutive), "frame_pairs" (video
      sets: two consecutive frames of one tracklet per row) or
      "camera_pairs" (every record with a random record of another camera;
      no identity labels used) or "pairs" (the given `pairs`).
    k: images per identity for "pk".
    seed: the order of every epoch follows from (seed, epoch).
    num_workers: grain worker processes (0: threads in this process).
    process_index, process_count: this host's shard (jax.process_index(),
      jax.process_count()).
    data_dir, manual_dir: see `datasets.prepare`.
    num_threads: decoding threads per process.
    frame_gap: frame distance of "frame_pairs".
    group_by: what "pk" groups by: "id" or "tracklet" (video sets: a
      tracklet as an identity, no labels needed).
    labels: int [n] labels for the split's records that replace "id" and
      "label" (pseudo identities; -1 = not used by "pk"), or None.
    pairs: int [m, 2] record pairs for sampler "pairs" (mined positives):
      each epoch is a permutation of them.
    repeat_ids: "pk" with fewer than P identities: repeat identities
      within a batch instead of failing (e.g. few pseudo identities).
    domain_pattern: a regex on the record paths whose group 1 names each
      record's domain (`domain_labels`): batches then hold "domain" int32
      [b] ("" : none).

  Returns:
    A grain IterDataset; `it = iter(loader)` gives dicts of NumPy arrays:
    "random"/"pk": image uint8 [b, h, w, 3], id, label (contiguous class
    index, -1 for junk), cam, index: int32 [b] (+ tracklet, frame for
    video sets); "frame_pairs" / "camera_pairs" / "pairs": image uint8
    [b, 2, h, w, 3], cam, id int32 [b] (of the first image; + tracklet
    for video sets), index, pair_id, pair_cam int32 [b, 2].
    `it.get_state()` / `it.set_state(state)` save and restore the position.
  """
  if global_batch_size % process_count:
    raise DataError(
      f"global_batch_size={global_batch_size} is not divisible by "
      f"process_count={process_count}"
    )
  if not 0 <= process_index < process_count:
    raise DataError(
      f"process_index={process_index} not in [0, {process_count})"
    )
  b = global_batch_size // process_count
  builder = datasets.prepare(name, data_dir=data_dir, manual_dir=manual_dir)
  source = sources.data_source(builder, split)
  meta = sources.split_meta(builder, split)
  if labels is not None:
    labels = np.asarray(labels, np.int32)
    if labels.shape != meta["id"].shape:
      raise DataError(
        f"labels has shape {labels.shape}; {name}/{split} has "
        f"{len(meta['id'])} records"
      )
    meta = {**meta, "id": labels, "label": labels}
  if domain_pattern:
    meta = {**meta, "domain": domain_labels(meta["path"], domain_pattern)[0]}
  if group_by not in ("id", "tracklet") or group_by not in meta:
    raise DataError(
      f"group_by={group_by!r}: expected 'id' or, for video sets, 'tracklet'"
    )
  if sampler == "pairs":
    plan = _PairPlan(_check_pairs(pairs, len(meta["id"])), seed)
  else:
    plan = _make_plan(
      sampler, meta, b, global_batch_size, k, seed, frame_gap, group_by,
      repeat_ids,
    )  # fmt: skip
  stream = _Stream(plan, b, process_index, process_count)
  # Batch before reading: an element is a whole batch, so threads and worker
  # processes split the stream by batches and keep its order.
  ds = (
    grain.MapDataset.source(stream)
    .map(_Load(source, meta, image_size))
    .batch(b)
    .to_iter_dataset(
      grain.ReadOptions(
        num_threads=num_threads, prefetch_buffer_size=num_threads
      )
    )
  )
  if num_workers > 0:
    # grain's worker processes read absl flags; outside absl.app.run (tests,
    # notebooks) they are unparsed and the workers fail.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return ds


def _check_pairs(pairs, n: int) -> np.ndarray:
  if pairs is None:
    raise DataError("sampler='pairs' needs pairs=[m, 2] record indices")
  pairs = np.asarray(pairs, np.int64)
  if pairs.ndim != 2 or pairs.shape[1] != 2 or not len(pairs):
    raise DataError(
      f"pairs must be a non-empty [m, 2] array, got {pairs.shape}"
    )
  if pairs.min() < 0 or pairs.max() >= n:
    raise DataError(f"pairs must index the split's {n} records")
  return pairs


def _make_plan(
  sampler, meta, b, global_batch_size, k, seed, frame_gap, group_by,
  repeat_ids=False,
):  # fmt: skip
  if sampler == "random":
    return _RandomPlan(len(meta["id"]), seed)
  if sampler == "pk":
    if k < 1 or b % k:
      raise DataError(
        f"sampler='pk': local batch {b} must be a multiple of k={k}"
      )
    return _PKPlan(meta[group_by], k, global_batch_size // k, seed, repeat_ids)
  if sampler == "frame_pairs":
    if "tracklet" not in meta:
      raise DataError(
        "sampler='frame_pairs' needs a video dataset "
        "(records with a 'tracklet' feature)"
      )
    pairs = frame_pairs(meta, frame_gap)
    if not len(pairs):
      raise DataError(f"no frame pairs at frame_gap={frame_gap}")
    return _PairPlan(pairs, seed)
  if sampler == "camera_pairs":
    return _CameraPairPlan(meta["cam"], seed)
  raise DataError(
    f"sampler={sampler!r}: expected 'random', 'pk', 'frame_pairs', "
    "'camera_pairs' or 'pairs'"
  )
