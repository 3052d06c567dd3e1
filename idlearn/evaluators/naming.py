"""Face naming accuracy on image-caption groups (weakly supervised naming).

Each face of a group is named with the caption name (NONAME included)
whose embedding scores highest with it, or NONAME when that score is
<= 0, as the official SECLA evaluation does (tingyu215/SECLA
scripts/run_test.py); a face is right when that is its correct name (its
own when the caption holds it, else NONAME). The official precision and
recall differ only through annotation-error entries of the news data
sets; the groups here have none, so both equal the accuracy and are not
reported apart.
"""

import numpy as np

NONAME = 0


def predict(
  face_feats: np.ndarray,
  name_feats: np.ndarray,
  faces: np.ndarray,
  names: np.ndarray,
  *,
  noname: int = NONAME,
) -> np.ndarray:
  """The name each face of each group is given.

  Args:
    face_feats: float [n, d] embeddings of the split's face images.
    name_feats: float [v, d] embeddings of the name ids.
    faces: int [g, r] image row of each face, -1 for an unused slot.
    names: int [g, s] name ids of each caption, -1 for an unused slot.
    noname: the NONAME id.
  Returns:
    int32 [g, r] name ids (-1 at unused face slots).
  """
  f = np.asarray(face_feats, np.float64)[np.maximum(faces, 0)]  # [g, r, d]
  n = np.asarray(name_feats, np.float64)[np.maximum(names, 0)]  # [g, s, d]
  sims = np.einsum("grd,gsd->grs", f, n)
  sims = np.where(names[:, None, :] >= 0, sims, -np.inf)
  best = np.argmax(sims, axis=-1)
  pred = np.take_along_axis(names, best, axis=1)
  pred = np.where(np.max(sims, axis=-1) > 0, pred, noname)
  return np.where(faces >= 0, pred, -1).astype(np.int32)


def evaluate(
  face_feats: np.ndarray,
  name_feats: np.ndarray,
  faces: np.ndarray,
  names: np.ndarray,
  truth: np.ndarray,
  *,
  noname: int = NONAME,
) -> dict[str, float]:
  """Naming accuracy of the groups' faces.

  Args:
    face_feats, name_feats, faces, names, noname: see `predict`.
    truth: int [g, r] the correct name id of each face (-1 unused).
  Returns:
    {"accuracy": over all faces, "named_accuracy": over the faces whose
    name is in the caption, "noname_accuracy": over the others (NaN when
    none), "chance": the accuracy of a uniform pick among each caption's
    names (NONAME included)}.
  """
  pred = predict(face_feats, name_feats, faces, names, noname=noname)
  used = faces >= 0
  right = (pred == truth) & used
  named = used & (truth != noname)
  n_names = np.sum(names >= 0, axis=1, keepdims=True)  # [g, 1]
  chance = np.broadcast_to(1.0 / np.maximum(n_names, 1), faces.shape)

  def frac(where):
    k = np.sum(where)
    return float(np.sum(right & where) / k) if k else float("nan")

  return {
    "accuracy": frac(used),
    "named_accuracy": frac(named),
    "noname_accuracy": frac(used & ~named),
    "chance": float(np.mean(chance[used])),
  }
