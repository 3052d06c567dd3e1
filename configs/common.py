"""Shared pieces of the experiment configs (imports only ml_collections).

One base per data set: its input, its evaluation and its size, all derived
from one image size, so that a config (and its `smoke` variant, which only
passes a smaller size) sets each in one place. Fields the library defaults
are not restated here.
"""

import os

import ml_collections

# The larger real sets that are not bundled with the package (MARS mini):
# the checkout's ../shared/data, or $IDLEARN_SHARED_DATA.
SHARED_DATA = os.environ.get("IDLEARN_SHARED_DATA", "../shared/data")
BUNDLED = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), "..", "idlearn", "data", "bundled"
)
SMOKE_SIZE = (32, 16)  # person crops in smoke runs (h, w)
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".pgm", ".bmp")


def shared(name: str) -> str:
  """Absolute path of data set folder `name` under SHARED_DATA."""
  return os.path.abspath(os.path.join(SHARED_DATA, name))


def image_count(folder: str) -> int:
  """Image files under `folder` (recursively): a split's size, read from
  the data so that epochs convert to steps without a hard-coded count."""
  return sum(
    f.lower().endswith(_IMAGE_EXTENSIONS)
    for _, _, files in os.walk(folder)
    for f in files
  )


def _convert(value: str, default):
  if isinstance(default, bool):
    if value.lower() not in ("true", "false", "1", "0", ""):
      raise ValueError(f"expected a boolean, got {value!r}")
    return value.lower() in ("true", "1", "")
  if isinstance(default, int):
    return int(value)
  if isinstance(default, float):
    return float(value)
  return value


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses a config's `:arg` string, e.g. "smoke" or "variant=S/16,smoke".

  Items are comma-separated; `key=value` sets a field (converted to the
  default's type), a bare `key` sets a boolean to True.

  Args:
    arg: the text after ":" in --config=path.py:arg, or None.
    **defaults: every accepted key with its default value.
  Returns:
    A locked ConfigDict of the keys.
  Raises:
    ValueError: an unknown key (the message lists the known ones) or a
      value that does not convert.
  """
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(
        f"config arg {key!r} unknown; known: {', '.join(sorted(defaults))}"
      )
    try:
      out[key] = _convert(value.strip(), defaults[key])
    except ValueError as e:
      raise ValueError(f"config arg {key}={value!r}: {e}") from None
  return ml_collections.ConfigDict(out, type_safe=True).lock()


def run(*, seed: int, total_steps: int) -> ml_collections.ConfigDict:
  """The run-level fields every experiment sets: the budget, logging and
  checkpoints every 10 / 100 steps, the untrained model evaluated first."""
  c = ml_collections.ConfigDict()
  c.seed, c.total_steps = seed, total_steps
  c.log_steps, c.ckpt_steps = 10, 100
  c.eval_at_start = True  # print the untrained encoder's numbers too
  c.miner = None
  return c


def smoke(c: ml_collections.ConfigDict) -> None:
  """Makes `c` a seconds-long run: 2 steps, logged and saved at each, a
  constant learning rate (the step program then does not depend on
  total_steps: a longer resumed run reuses its compilation), the tiny
  ResNet (sizes are the caller's: pass a small one)."""
  c.total_steps, c.log_steps, c.ckpt_steps = 2, 1, 1
  c.optim.warmup_steps, c.optim.schedule = 0, "constant"
  kw = {k: v for k, v in c.model.encoder_kw.items() if k == "last_stride"}
  c.model.encoder, c.model.encoder_kw = "resnet_tiny", kw


def resnet(encoder: str, width: int, *, last_stride: int = 1) -> dict:
  """config.model of a ResNet with stage widths w, 2w, 4w, 8w (64: the
  torchvision widths); last stride 1 keeps a finer final map for re-ID.
  `init` is there (empty) so that --config.model.init=WEIGHTS can be given
  on the command line (a locked config takes only existing fields)."""
  w = width
  kw = dict(widths=(w, 2 * w, 4 * w, 8 * w))
  if last_stride != 2:
    kw["last_stride"] = last_stride
  if not encoder.startswith("resnet"):
    kw = {}
  return dict(encoder=encoder, encoder_kw=kw, init="")


def adamw(lr: float, weight_decay: float, total_steps: int, **kw) -> dict:
  """AdamW, 10% linear warmup, cosine to 1% of the peak."""
  return dict(
    name="adamw", lr=lr, weight_decay=weight_decay,
    warmup_steps=total_steps // 10, end_lr_factor=0.01, **kw,
  )  # fmt: skip


# --- PKU-Reid (bundled): 62 training ids, 12 held-out ids, 2 cameras.
PKU_REID = os.path.join(BUNDLED, "pku_reid")
PKU_REID_CAMERAS = 2


def pku_reid_train_images() -> int:
  return image_count(os.path.join(PKU_REID, "train"))


def pku_reid_input(size, *, batch: int, sampler="random", k=4) -> dict:
  return dict(
    name="pku_reid", image_size=size, global_batch_size=batch,
    sampler=sampler, k=k,
  )  # fmt: skip


def pku_reid_eval(size) -> dict:
  """config.evals of the PKU-Reid runs: the 12 held-out ids, Market-1501
  protocol, cosine on the retrieval feature, plain and camera-centred."""
  return dict(pku_reid=dict(data="pku_reid", image_size=size,
                            camera_centering=True))  # fmt: skip


# --- Market-1501 mini (bundled): 16 training ids (32 images), 16 other ids
# in query / gallery, 6 cameras.
MARKET1501_MINI = os.path.join(BUNDLED, "market1501_mini")


# --- MARS mini (../shared/data): 32 training tracklets (16 ids, 6 cameras),
# query / gallery tracklets of 16 other ids.
def mars_train_images() -> int:
  return image_count(os.path.join(shared("mars_mini"), "bbox_train"))


def mars_input(size, *, batch: int, sampler="random", **kw) -> dict:
  return dict(
    name="mars", manual_dir=shared("mars_mini"), image_size=size,
    global_batch_size=batch, sampler=sampler, **kw,
  )  # fmt: skip


def mars_eval(size) -> dict:
  """Tracklet retrieval on MARS mini's query / gallery (frame features
  averaged per tracklet)."""
  return dict(
    type="video_reid", data="mars", manual_dir=shared("mars_mini"),
    image_size=size,
  )  # fmt: skip


# --- AT&T faces (bundled): train on s1-s28, verify on s29-s40.
def att_faces_input(size, *, batch: int, k: int) -> dict:
  return dict(
    name="att_faces", image_size=size, global_batch_size=batch,
    sampler="pk", k=k,
  )  # fmt: skip


def att_faces_evals(size) -> dict:
  """10-fold verification on the held-out subjects with the flip test, on
  the trained embedding ("eval") and on the encoder's pooled feature."""
  verify = dict(type="verification", data="att_faces", image_size=size,
                flip_test=True)  # fmt: skip
  return dict(att_faces=verify, att_faces_backbone=dict(verify, feature="emb"))
