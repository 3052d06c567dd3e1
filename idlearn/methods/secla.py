"""SECLA / SECLA-B: weakly supervised face naming with a symmetry-enhanced
contrastive loss.

Qu, Tuytelaars, Moens, "Weakly Supervised Face Naming with Symmetry-
Enhanced Contrastive Loss", WACV 2023 (arXiv 2210.08957). Followed: the
official code tingyu215/SECLA at c10ed60 (face_align.py,
face_align_incre.py, models/face_align_model.py, scripts/
run_face_align*.sh, scripts/run_test.py).

Data: image-caption groups (`idlearn.data.secla_groups`), made by the
miner "caption_groups" from an identity split (AT&T faces): a batch is B
groups, each with up to r faces, a caption of up to s names (slot 0 is
NONAME) and no face-name link.

Network: faces = the idlearn encoder (trained; its pooled feature "emb" is
the retrieval feature that leaves the run) -> face projector; names = a
trained name table (one row per subject, row 0 NONAME) -> name projector.
Both projectors are the official "two5": Dense(hidden, no bias), ReLU,
Dense(out), ReLU, Dense(out) (512 -> 128 -> 128).

SECLA (the loss): `losses.secla` on the projected faces and names of the
batch's groups: the CE of both directions over the batch plus 0.15 x the
squared difference of the two directions' own-pair scores (official
`BatchSoftmax(direction="agree", agree_type="diag")`). `directions=
"face_to_name"` with alpha 0 is the one-direction contrastive baseline
(official `direction="name"`).

SECLA-B (`bootstrap=True`; the miner's `easy_steps` > 0): stage 1 trains
SECLA on the easy groups only (one face, one name); stage 2 on all groups,
where each batch is split by the current model (official
`batch_match_incre_make_new`, `add_d_one`, `add_nullface`):
1. each face is aligned to its best caption name (NONAME if its best
   score is <= 0); each known name (one with easy faces) that faces are
   aligned to is matched to the best-scoring of them; easy groups stay
   whole;
2. matched faces and names leave the group; `losses.secla` runs on what
   is left (the unmatched part);
3. `losses.secla_bootstrap` on the matched part: each matched name
   brings another face of that name drawn at random from the easy groups
   (the loader draws it for every caption name), and a fixed null face
   with NONAME joins the matched and added sets; the combined term
   contrasts matched names with matched faces (own group) against the
   added faces of the others, and the face term (anti-forgetting) matched
   faces against added faces.
The stage-2 model is the stage-1 model trained on (the official script
sets `add_extra_proj False`: no second projector pair mixed in with
`beta_incre` at inference).

Assumptions and differences from the official code:
- faces are learned end to end by the idlearn encoder from scratch (the
  official code projects frozen FaceNet / ResNet-34 features); the added
  faces go through the encoder without gradient (the official's only
  trained path for them is the projector, as here);
- names are a trained table, not frozen BERT features (no BERT offline;
  the official code's `use_onehot` word embeddings are the closest);
- padding is masked in the loss (the official code zero-pads and counts
  the pads in the means);
- one optimizer and one warmup-cosine schedule over both stages (the
  official restarts AdamW with a cosine of period 64 iterations); the
  official `mid_pdist` choice of the added face (by a precomputed pairwise
  distance list not in the repository) is replaced by a random easy face;
- the null face is a fixed N(0, 1) vector in the encoder's feature space,
  drawn once from a fixed key (official: randn(512) in FaceNet space).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from idlearn import fields, losses, sharding
from idlearn.data import secla_groups
from idlearn.encoders import backbone
from idlearn.errors import ConfigError
from idlearn.losses.secla import DIRECTIONS
from idlearn.methods import base

_NULL_FACE_SEED = 0


class Projector(nn.Module):
  """The official "two5" projector: Dense(hidden, no bias), ReLU,
  Dense(out), ReLU, Dense(out); [..., k] -> float32 [..., out]."""

  hidden: int = 512
  out: int = 128
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Dense(self.hidden, use_bias=False, dtype=self.dtype)(x)
    x = nn.Dense(self.out, dtype=self.dtype)(nn.relu(x))
    x = nn.Dense(self.out, dtype=self.dtype)(nn.relu(x))
    return x.astype(jnp.float32)


class NamingNet(nn.Module):
  """Encoder -> "emb" (= "eval") -> face projector ("face"); name ids ->
  name table -> name projector ("name", when names are given).

  Attributes:
    encoder: the face encoder.
    num_names: V subjects; the table has V + 1 rows (row 0 NONAME).
    name_dim: width of the name table.
    proj_hidden, proj_dim: the projectors' widths.
  """

  encoder: nn.Module
  num_names: int
  name_dim: int = 512
  proj_hidden: int = 512
  proj_dim: int = 128
  dtype: Any = jnp.float32

  def setup(self):
    self.face_projector = Projector(self.proj_hidden, self.proj_dim, self.dtype)
    self.name_table = nn.Embed(
      self.num_names + 1,
      self.name_dim,
      embedding_init=nn.initializers.normal(1.0),
    )
    self.name_projector = Projector(self.proj_hidden, self.proj_dim, self.dtype)

  def __call__(
    self,
    images: jax.Array,
    train: bool = False,
    names: jax.Array | None = None,
  ) -> dict[str, jax.Array]:
    """images [n, h, w, 3], names int [...] -> {"emb", "eval", "face"
    [n, proj_dim], "name" [..., proj_dim]}."""
    out = backbone(self.encoder, "none", images, train=train, dtype=self.dtype)
    out["face"] = self.face_projector(out["emb"])
    if names is None and self.is_initializing():  # create the name tower
      names = jnp.zeros((1,), jnp.int32)
    if names is not None:
      out["name"] = self.embed_names(names)
    return out

  def project_faces(self, emb: jax.Array, train: bool = False) -> jax.Array:
    """Encoder features [n, e] -> projected faces float32 [n, proj_dim]."""
    del train
    return self.face_projector(emb)

  def embed_names(self, ids: jax.Array, train: bool = False) -> jax.Array:
    """Name ids int [...] -> projected names float32 [..., proj_dim]."""
    del train
    return self.name_projector(self.name_table(ids))


def aligned_slots(sims: jax.Array, name_mask: jax.Array) -> jax.Array:
  """The caption slot each face is named with (official `run_test.py` and
  `find_aligned_names`): its best-scoring name, or slot 0 (NONAME) when
  that score is <= 0.

  Args:
    sims: [b, r, s] face-name scores; slot 0 is NONAME.
    name_mask: bool [b, s].
  Returns:
    int32 [b, r].
  """
  masked = jnp.where(name_mask[:, None], sims, -jnp.inf)
  best = jnp.argmax(masked, axis=-1).astype(jnp.int32)
  return jnp.where(jnp.max(masked, axis=-1) > 0, best, 0)


def match_known_names(
  sims: jax.Array,
  face_mask: jax.Array,
  name_mask: jax.Array,
  known: jax.Array,
) -> jax.Array:
  """SECLA-B's split of each group into matched and unmatched parts.

  A known name that some faces are aligned to (`aligned_slots`) is
  matched to the best-scoring of those faces; a group with one face and
  one name (an easy one) stays whole (official `add_d_one`). Each face is
  aligned to one slot, so it is matched to at most one name.

  Args:
    sims: [b, r, s] face-name scores (no gradient needed); slot 0 NONAME.
    face_mask: bool [b, r]; name_mask: bool [b, s].
    known: bool [b, s], names that have easy faces (False at slot 0).
  Returns:
    int32 [b, s]: the face matched to each name slot, -1 for none.
  """
  s = sims.shape[-1]
  aligned = aligned_slots(sims, name_mask)  # [b, r]
  cand = (aligned[:, :, None] == jnp.arange(s)) & face_mask[:, :, None]
  face = jnp.argmax(jnp.where(cand, sims, -jnp.inf), axis=1)  # [b, s]
  easy = (jnp.sum(face_mask, 1) == 1) & (jnp.sum(name_mask, 1) == 2)
  ok = jnp.any(cand, axis=1) & known & name_mask & ~easy[:, None]
  return jnp.where(ok, face, -1).astype(jnp.int32)


def _naming_accuracy(sims, face_mask, name_mask, ids, truth) -> jax.Array:
  """Fraction of the batch's faces named right (a report: reads truth)."""
  slot = aligned_slots(sims, name_mask)
  pred = jnp.take_along_axis(ids, slot, axis=1)
  right = jnp.sum((pred == truth) & face_mask)
  return right / jnp.maximum(jnp.sum(face_mask), 1)


class Secla(base.Method):
  """Face and name embeddings from image-caption groups (SECLA, SECLA-B)."""

  NAMES = ("secla",)
  VIEWS = {"image": 1}
  MINERS = ("caption_groups",)
  NEEDS_MINER = True
  FIELDS = {
    "directions": "both",  # both | face_to_name | name_to_face
    "alpha": 0.15,  # weight of the agreement term
    # SECLA-B: easy groups first, then the bootstrapping terms (needs
    # config.miner.easy_steps > 0)
    "bootstrap": False,
    "name_dim": 512,  # the name table's width
    "proj_hidden": 512,
    "proj_dim": 128,
    "num_names": 0,  # 0: the training split's subjects
  }

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    if cfg["directions"] not in DIRECTIONS:
      raise base.field_error(
        name, f"directions={cfg['directions']!r}: one of {DIRECTIONS}"
      )
    if cfg["alpha"] < 0:
      raise base.field_error(name, f"alpha={cfg['alpha']}: expected >= 0")
    for key in ("name_dim", "proj_hidden", "proj_dim"):
      if cfg[key] < 1:
        raise base.field_error(name, f"{key}={cfg[key]}: expected >= 1")
    easy_steps = miner.cfg["easy_steps"]
    if cfg["bootstrap"] != (easy_steps > 0):
      raise base.field_error(
        name,
        f"bootstrap={cfg['bootstrap']} needs "
        f"config.miner.easy_steps {'> 0' if cfg['bootstrap'] else '= 0'} "
        f"(got {easy_steps}): SECLA-B's stage 1 trains on the easy groups",
      )
    self.num_names = cfg["num_names"] or setup.num_classes()
    self._secla = sharding.shard_loss(
      losses.secla,
      setup.mesh,
      alpha=cfg["alpha"],
      directions=cfg["directions"],
    )
    self._bootstrap = sharding.shard_loss(losses.secla_bootstrap, setup.mesh)
    self._naming_fn = None

  def network(self) -> nn.Module:
    cfg = self.cfg
    return NamingNet(
      encoder=self.setup.make_encoder(),
      num_names=self.num_names,
      name_dim=cfg["name_dim"],
      proj_hidden=cfg["proj_hidden"],
      proj_dim=cfg["proj_dim"],
      dtype=self.setup.dtype,
    )

  def loss(self, net, views, batch, ctx):
    """SECLA on the batch's groups, or SECLA-B's stage 2 when the batch
    carries easy faces ("extra_mask").

    The batch (`data.secla_groups.GroupLoader`): b groups of r face and
    s name slots; views["image"][0] float32 [b * t, h, w, 3], group-major
    (t = r, or r + s - 1 with the easy faces); face_mask bool [b, r],
    names int32 [b, s], name_mask bool [b, s], truth int32 [b, r] (only
    for the naming_acc / match_acc reports), extra_mask bool [b, s].
    """
    fm, nm, ids = batch["face_mask"], batch["name_mask"], batch["names"]
    b, r = fm.shape
    x = base.first(views, "image")  # [b * t, h, w, 3], group-major
    x = x.reshape(b, -1, *x.shape[1:])
    out = net(x[:, :r].reshape(b * r, *x.shape[2:]), names=ids)
    faces = out["face"].reshape(b, r, -1)  # [b, r, d]
    names = out["name"]  # [b, s, d]
    sims = jax.lax.stop_gradient(jnp.einsum("brd,bsd->brs", faces, names))
    aux = {"naming_acc": _naming_accuracy(sims, fm, nm, ids, batch["truth"])}
    if "extra_mask" not in batch:  # SECLA, or SECLA-B's stage 1
      value, terms = self._secla(faces, fm, names, nm)
      return value, {**terms, **aux}, ctx.extras
    match = match_known_names(sims, fm, nm, batch["extra_mask"])  # [b, s]
    matched = match >= 0
    matched_face = jnp.any(match[:, None, :] == jnp.arange(r)[:, None], -1)
    unmatched = (fm & ~matched_face, nm & ~matched)
    rest, rest_terms = self._secla(faces, unmatched[0], names, unmatched[1])
    # the other easy face of each name: no gradient into the encoder
    extra = x[:, r:].reshape(-1, *x.shape[2:])  # [b * (s-1), h, w, 3]
    emb = jax.lax.stop_gradient(net(extra)["emb"])
    added = net(emb, method="project_faces").reshape(b, -1, faces.shape[-1])
    null_in = jax.random.normal(
      jax.random.key(_NULL_FACE_SEED), (1, emb.shape[-1])
    )
    null = net(null_in, method="project_faces")[0]  # [d]
    null_b = jnp.broadcast_to(null, (b, 1, null.shape[0]))
    matched_faces = jnp.take_along_axis(
      faces, jnp.maximum(match, 0)[:, :, None], axis=1
    )  # [b, s, d]
    matched_faces = jnp.concatenate([null_b, matched_faces[:, 1:]], axis=1)
    added = jnp.concatenate([null_b, added], axis=1)
    slots = matched.at[:, 0].set(jnp.any(matched, axis=1))  # + null/NONAME
    boot, boot_terms = self._bootstrap(matched_faces, added, names, slots)
    right = jnp.take_along_axis(batch["truth"], jnp.maximum(match, 0), 1)
    n_match = jnp.sum(matched)
    aux.update(
      {f"rest_{k}": v for k, v in rest_terms.items()},
      **boot_terms,
      matched_frac=n_match / jnp.maximum(jnp.sum(fm), 1),
      match_acc=jnp.sum((right == ids) & matched) / jnp.maximum(n_match, 1),
    )
    return rest + boot, aux, ctx.extras

  def naming_embeddings(
    self, params: Any, emb: np.ndarray
  ) -> tuple[np.ndarray, np.ndarray]:
    """What face naming compares (the naming evaluator's hook).

    Args:
      params: the network's parameters (a train state's).
      emb: float32 [n, e] encoder features ("emb") of face images.
    Returns:
      (faces float32 [n, d], names float32 [V + 1, d]): the projected
      faces and every name id's embedding (row 0 NONAME).
    """
    if self._naming_fn is None:
      net = self.network()

      def embed(params, emb):
        v = {"params": params}
        ids = jnp.arange(self.num_names + 1)
        return (
          net.apply(v, emb, method="project_faces"),
          net.apply(v, ids, method="embed_names"),
        )

      self._naming_fn = jax.jit(embed)
    faces, names = self._naming_fn(params, jnp.asarray(emb, jnp.float32))
    return sharding.to_host(faces), sharding.to_host(names)


class CaptionGroupsMiner(base.Miner):
  """Makes the batches of image-caption groups (no mining: the groups are
  fixed by `split_seed`; the batches are re-drawn every `every_steps`).

  With `easy_steps` > 0 (SECLA-B), the batches of the first `easy_steps`
  steps hold only the easy groups (one face, one name; shapes [B, 1] and
  [B, 2]: the train step compiles once more at the switch), the later
  ones every group plus, for each caption name, a random face of that
  name from the easy groups (the loader's `extras`).
  """

  NAME = "caption_groups"
  FIELDS = {
    "every_steps": fields.REQUIRED,  # re-draw the batch order
    "easy_steps": 0,  # SECLA-B: steps on the easy groups (a multiple)
    **secla_groups.FIELDS,
  }

  def __init__(self, cfg, setup):
    super().__init__(cfg, setup)
    self.groups_cfg = secla_groups.resolve(
      {k: cfg[k] for k in secla_groups.FIELDS}, "config.miner"
    )
    easy, every = cfg["easy_steps"], cfg["every_steps"]
    if easy < 0 or (easy and (easy % every or easy >= setup.total_steps)):
      raise ConfigError(
        f"config.miner.easy_steps = {easy}: expected 0, or a multiple of "
        f"config.miner.every_steps ({every}) below config.total_steps "
        f"({setup.total_steps}) (stage 2 starts at a re-draw)"
      )
    self._data = None

  def data(self) -> dict[str, Any]:
    """The split's images, its training and held-out groups, the easy
    groups and their faces by name (loaded once)."""
    if self._data is None:
      from idlearn import data

      t = self.setup.input
      split = data.load_split(
        t["name"],
        t["split"],
        image_size=tuple(t["image_size"]),
        data_dir=t["data_dir"] or None,
        manual_dir=t["manual_dir"] or None,
      )
      labels = split["label"]
      train, test = secla_groups.build(labels, self.groups_cfg, "config.miner")
      num_names = int(labels.max()) + 1
      easy = train.subset(secla_groups.easy(train))
      if self.cfg["easy_steps"] and not len(easy):
        raise ConfigError(
          "config.miner: no easy group (one face, one name) to train "
          "SECLA-B's stage 1 on; lower max_faces, distractors or drop_name"
        )
      self._data = {
        "images": split["image"],
        "train": train,
        "test": test,
        "easy": easy,
        "easy_rows": secla_groups.easy_faces(train, num_names),
      }
    return self._data

  def stage(self, step: int) -> str:
    """ "all" (SECLA), "easy" then "bootstrap" (SECLA-B) at `step`."""
    easy = self.cfg["easy_steps"]
    if not easy:
      return "all"
    return "easy" if step < easy else "bootstrap"

  def sample(self) -> np.ndarray:
    return np.zeros((1, *self.setup.input["image_size"], 3), np.uint8)

  def init_state(self, feature_dims):
    del feature_dims
    return {"draws": np.int32(0)}

  def refresh(self, features, state):
    del features  # the groups do not depend on the model
    draws = int(state["draws"])
    stage = self.stage(draws * self.every_steps)
    d = self.data()
    message = (
      f"caption groups: {len(d['train'])} training ({len(d['easy'])} "
      f"easy), {len(d['test'])} held-out; stage {stage!r} from step "
      f"{draws * self.every_steps}"
    )
    info = {"groups/stage": float(["all", "easy", "bootstrap"].index(stage))}
    return {"draws": np.int32(draws + 1)}, info, message

  def loader(self, state, step):
    del state
    d, stage = self.data(), self.stage(step)
    return secla_groups.GroupLoader(
      d["images"],
      d["easy"] if stage == "easy" else d["train"],
      global_batch=self.setup.input["global_batch_size"],
      seed=self.setup.seed + 7919 * (step + 1),
      easy_rows=d["easy_rows"],
      extras=stage == "bootstrap",
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )


METHODS = (Secla,)
MINERS = (CaptionGroupsMiner,)
