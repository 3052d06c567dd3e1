"""Image-caption groups from an identity split, for weakly supervised face
naming (SECLA, Qu et al. WACV 2023), and their training loader.

A group stands for a news photo: 1..`max_faces` face images of distinct
subjects, and a caption that is a bag of names: the name of each face
(left out with probability `drop_name`: that face's correct label is then
NONAME) plus 0..`distractors` names of other subjects (uniformly many;
the ambiguity of the task), in random order. Which name goes with which
face is not given. Name ids are the subjects' labels + 1; 0 is NONAME,
and slot 0 of every caption holds it (the official code appends NONAME to
every caption, `add_noname` / `cons_noname`).

The images of each subject are split once (`split_seed`) into those of the
training groups and those of the held-out groups: face naming names known
people, so the held-out groups show the same subjects in other images.
Groups with one face and one name are the "easy" ones that SECLA-B learns
from first (its stage 1); like the official easy subset they are read off
the groups themselves (one face, one caption name), so a few are wrong
(a dropped name plus a distractor).

Everything here is NumPy and deterministic from the seeds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

NONAME = 0
PAD = -1

# Fields of a group set (config.miner of the method, config.evals of the
# naming evaluator: give both the same values).
FIELDS = {
  "groups": 2000,  # training groups
  "test_groups": 300,  # held-out groups
  "max_faces": 4,  # faces per group: 1..max_faces, uniformly
  "distractors": 2,  # extra names per caption: 0..distractors, uniformly
  "drop_name": 0.1,  # probability that a face's name is not in the caption
  "test_per_subject": 2,  # images of each subject kept for held-out groups
  "split_seed": 0,  # the held-out images and both sets of groups
}


@dataclasses.dataclass(frozen=True)
class Groups:
  """A set of g image-caption groups (PAD = -1 fills unused slots).

  Attributes:
    faces: int32 [g, r] row of each face's image in the split.
    names: int32 [g, s] name ids of each caption; slot 0 is NONAME.
    truth: int32 [g, r] the correct name of each face: its own id when the
      caption holds it, else NONAME.
  """

  faces: np.ndarray
  names: np.ndarray
  truth: np.ndarray

  def __len__(self) -> int:
    return len(self.faces)

  @property
  def face_mask(self) -> np.ndarray:
    return self.faces != PAD

  @property
  def name_mask(self) -> np.ndarray:
    return self.names != PAD

  def subset(self, keep: np.ndarray) -> Groups:
    """The groups `keep` (indices or bool [g]), unused slots trimmed."""
    f, n, t = self.faces[keep], self.names[keep], self.truth[keep]
    r = max(int(np.max(np.sum(f != PAD, axis=1), initial=1)), 1)
    s = max(int(np.max(np.sum(n != PAD, axis=1), initial=1)), 1)
    return Groups(f[:, :r], n[:, :s], t[:, :r])


def resolve(
  cfg: Mapping[str, Any] | None, where: str = "groups"
) -> dict[str, Any]:
  """A group set's fields over `FIELDS`, checked; `where` is the config
  group they come from, for messages.

  Raises:
    ValueError: an unknown field, a wrong type or an out-of-range value.
  """
  from idlearn import fields
  from idlearn.errors import ConfigError

  out = fields.resolve(cfg, FIELDS, where)
  for key, least in (("groups", 1), ("test_groups", 1), ("max_faces", 1),
                     ("distractors", 0), ("test_per_subject", 1)):  # fmt: skip
    if out[key] < least:
      raise ConfigError(f"{where}.{key} = {out[key]}: expected >= {least}")
  if not 0.0 <= out["drop_name"] < 1.0:
    raise ConfigError(
      f"{where}.drop_name = {out['drop_name']}: expected in [0, 1)"
    )
  return out


def split_rows(
  labels: np.ndarray, test_per_subject: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """(training rows, held-out rows): `test_per_subject` random images of
  each subject held out (int64 [n - k], [k], sorted).

  Raises:
    ValueError: a subject has no image left for training.
  """
  rng = np.random.default_rng([seed, 0])
  test = []
  for label in np.unique(labels[labels >= 0]):
    rows = np.flatnonzero(labels == label)
    if len(rows) <= test_per_subject:
      raise ValueError(
        f"groups.test_per_subject = {test_per_subject} leaves subject "
        f"{label} ({len(rows)} images) none for training"
      )
    test.append(rng.choice(rows, test_per_subject, replace=False))
  test = np.sort(np.concatenate(test))
  train = np.setdiff1d(np.flatnonzero(labels >= 0), test)
  return train, test


def make_groups(
  labels: np.ndarray,
  rows: np.ndarray,
  *,
  count: int,
  max_faces: int,
  distractors: int,
  drop_name: float,
  seed: int,
) -> Groups:
  """`count` groups of the images `rows` (see the module docstring).

  Args:
    labels: int [n] the subject (0..V-1) of every image of the split.
    rows: the images the groups show.
    count, max_faces, distractors, drop_name: see `FIELDS`.
    seed: the groups' seed.
  Returns:
    Groups with r = max_faces, s = 1 + max_faces + distractors slots.
  """
  rng = np.random.default_rng([seed, 1])
  rows = np.asarray(rows)
  subjects = np.unique(labels[rows])
  everyone = np.unique(labels[labels >= 0])
  by_subject = {s: rows[labels[rows] == s] for s in subjects}
  r_max, s_max = max_faces, 1 + max_faces + distractors
  faces = np.full((count, r_max), PAD, np.int32)
  names = np.full((count, s_max), PAD, np.int32)
  truth = np.full((count, r_max), PAD, np.int32)
  names[:, 0] = NONAME
  for g in range(count):
    r = int(rng.integers(1, min(max_faces, len(subjects)) + 1))
    who = rng.choice(subjects, r, replace=False)
    faces[g, :r] = [rng.choice(by_subject[s]) for s in who]
    kept = rng.random(r) >= drop_name
    truth[g, :r] = np.where(kept, who + 1, NONAME)
    others = np.setdiff1d(everyone, who)
    d = min(int(rng.integers(0, distractors + 1)), len(others))
    extra = rng.choice(others, d, replace=False) if d else []
    caption = rng.permutation(np.concatenate([who[kept], extra]).astype(int))
    names[g, 1 : 1 + len(caption)] = caption + 1
  return Groups(faces, names, truth)


def build(
  labels: np.ndarray, cfg: Mapping[str, Any], where: str = "groups"
) -> tuple[Groups, Groups]:
  """(training groups, held-out groups) of a split with subject `labels`
  (int [n], contiguous 0..V-1, -1 for junk) and the fields `cfg` (from
  config group `where`)."""
  cfg = resolve(cfg, where)
  train, test = split_rows(labels, cfg["test_per_subject"], cfg["split_seed"])
  kw = {k: cfg[k] for k in ("max_faces", "distractors", "drop_name")}
  seed = cfg["split_seed"]
  return (
    make_groups(labels, train, count=cfg["groups"], seed=seed, **kw),
    make_groups(labels, test, count=cfg["test_groups"], seed=seed + 7919, **kw),
  )


def easy(groups: Groups) -> np.ndarray:
  """bool [g]: groups with one face and one caption name (besides NONAME)."""
  return (np.sum(groups.face_mask, 1) == 1) & (np.sum(groups.name_mask, 1) == 2)


def easy_faces(groups: Groups, num_names: int) -> list[np.ndarray]:
  """For each name id 0..num_names, the image rows of the easy groups
  captioned with it (empty for NONAME and for names no easy group has)."""
  e = easy(groups)
  rows, ids = groups.faces[e, 0], groups.names[e, 1]
  return [np.unique(rows[ids == i]) if i else rows[:0] for i in range(
    num_names + 1)]  # fmt: skip


class GroupLoader:
  """Batches of groups for training: an iterable of dicts of NumPy arrays.

  Each epoch is a permutation of the groups drawn from (seed, epoch);
  global batch k is stream positions k*B .. k*B + B - 1 and process p of c
  reads groups p*b .. p*b + b - 1 of it (b = B / c). A batch of b groups
  with r face slots and s name slots holds:

    image: uint8 [b * t, h, w, 3], group-major: each group's r faces (an
      unused slot repeats the group's first face, so that BatchNorm sees
      no blank image), then with `extras` one image per name slot
      1..s-1: a random easy face of that name (the first face again where
      the name has none).
    face_mask: bool [b, r]; names: int32 [b, s] (NONAME in unused slots)
      and name_mask: bool [b, s]; truth: int32 [b, r] the correct name of
      each face, -1 in unused slots (for reports only: training never
      reads it); with `extras`, extra_mask: bool [b, s] the name slots
      with an easy face (slot 0, NONAME, never).

  Args:
    images: uint8 [n, h, w, 3] the split's images.
    groups: the groups to draw from.
    global_batch: B, groups per global batch.
    seed: the order's seed.
    easy_rows: `easy_faces(...)` of the training groups (with `extras`).
    extras: add the easy faces of the caption's names.
    process_index, process_count: this process and the process count.
  """

  def __init__(
    self,
    images: np.ndarray,
    groups: Groups,
    *,
    global_batch: int,
    seed: int,
    easy_rows: list[np.ndarray] | None = None,
    extras: bool = False,
    process_index: int = 0,
    process_count: int = 1,
  ):
    if global_batch % process_count:
      raise ValueError(
        f"global_batch = {global_batch} groups does not split over "
        f"{process_count} processes"
      )
    if extras and easy_rows is None:
      raise ValueError("extras=True needs easy_rows")
    self.images, self.groups, self.seed = images, groups, seed
    self.b = global_batch // process_count
    self.p, self.c = process_index, process_count
    self.extras, self.easy_rows = extras, easy_rows

  def __iter__(self) -> _GroupIterator:
    return _GroupIterator(self)

  def group_order(self, epoch: int) -> np.ndarray:
    rng = np.random.default_rng([self.seed, epoch])
    return rng.permutation(len(self.groups))

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's slice of global batch `step` (0-based)."""
    n, first = len(self.groups), (step * self.c + self.p) * self.b
    pos = first + np.arange(self.b)
    idx = np.empty(self.b, np.int64)
    for e in np.unique(pos // n):
      at = pos // n == e
      idx[at] = self.group_order(int(e))[pos[at] % n]
    g = self.groups
    faces, names = g.faces[idx], g.names[idx]
    fm, nm = faces != PAD, names != PAD
    slots = np.where(fm, faces, faces[:, :1])  # [b, r]
    out = {"face_mask": fm, "name_mask": nm, "truth": g.truth[idx]}
    out["names"] = np.where(nm, names, NONAME).astype(np.int32)
    if self.extras:
      extra, known = self._extras(names, slots[:, 0], pos)
      slots = np.concatenate([slots, extra], axis=1)
      out["extra_mask"] = known
    out["image"] = self.images[slots.reshape(-1)]
    return out

  def _extras(self, names, first, pos):
    """([b, s-1] image rows, bool [b, s] known) of the names' easy faces,
    drawn from (seed, stream position)."""
    b, s = names.shape
    rows = np.repeat(first[:, None], s - 1, axis=1)
    known = np.zeros((b, s), bool)
    for i in range(b):
      rng = np.random.default_rng([self.seed, 2, int(pos[i])])
      for j in range(1, s):
        pool = self.easy_rows[names[i, j]] if names[i, j] > 0 else ()
        if len(pool):
          rows[i, j - 1], known[i, j] = rng.choice(pool), True
    return rows, known


class _GroupIterator:
  def __init__(self, loader: GroupLoader):
    self.loader, self.step = loader, 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    out = self.loader.batch(self.step)
    self.step += 1
    return out

  def get_state(self) -> dict:
    return {"step": self.step}

  def set_state(self, state: dict) -> None:
    self.step = int(state["step"])
