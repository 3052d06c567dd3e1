"""Metrics to TensorBoard and metrics.jsonl, and a progress display.

Only process 0 writes or prints; the other processes get no-op objects.
"""

import json
import os
import sys
import time
from collections.abc import Mapping

import jax
import numpy as np
from absl import logging


class MetricWriter:
  """Appends scalars to `<workdir>/metrics.jsonl` and TensorBoard events.

  Each JSON line is {"step": s, name: value, ...}, written whole by one
  system call; a line cut short by a crash or a full disk is removed when
  the file is next opened, so the file always parses. A resumed run
  appends, so a step that was logged before a crash may appear twice (the
  later line wins).
  """

  def __init__(self, workdir: str):
    self._on = jax.process_index() == 0
    self._tb = None
    if not self._on:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    _drop_partial_line(path)
    self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      self._tb = _summary_writer()(os.path.join(workdir, "tensorboard"))
    except ImportError:  # TensorBoard files are optional, the JSON is not
      logging.warning("tensorboardX missing: no TensorBoard event files")

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self._on:
      return
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    line = json.dumps({"step": int(step), **scalars}) + "\n"
    os.write(self._fd, line.encode())
    if self._tb is not None:
      for name, value in scalars.items():
        self._tb.add_scalar(name, value, step)
      self._tb.flush()

  def close(self) -> None:
    if self._on:
      os.close(self._fd)
      if self._tb is not None:
        self._tb.close()


def _drop_partial_line(path: str) -> None:
  """Truncates `path` after its last complete line (no-op if it is whole)."""
  if not os.path.isfile(path):
    return
  with open(path, "rb+") as f:
    data = f.read()
    if not data or data.endswith(b"\n"):
      return
    end = data.rfind(b"\n") + 1
    logging.warning(
      "%s: dropping a partial last line (%d bytes) left by an interrupted "
      "write", path, len(data) - end,
    )  # fmt: skip
    f.truncate(end)


def _summary_writer():
  """tensorboardX.SummaryWriter, imported without dragging in PyTorch.

  tensorboardX imports torch when it is installed (3 s and ~300 MB here)
  only to recognise torch tensors; we log floats, so hide torch while it
  loads, unless the user already imported it.
  """
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter

    return SummaryWriter
  sys.modules["torch"] = None  # makes `import torch` raise ImportError
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class Progress:
  """A tqdm bar on a terminal, plain log lines otherwise; images/s and ETA.

  Args:
    start: first step of this run (after a resume: the restored step).
    total: last step.
    batch_size: global images per step.
  """

  def __init__(self, start: int, total: int, batch_size: int):
    self._on = jax.process_index() == 0
    self._start, self._total, self._bs = start, total, batch_size
    self._t0 = time.perf_counter()
    self._first = None
    self._bar = None
    if self._on and sys.stderr.isatty():
      from tqdm import tqdm

      self._bar = tqdm(
        total=total, initial=start, unit="step", dynamic_ncols=True
      )

  def update(self, step: int, scalars: Mapping[str, float]) -> None:
    """Shows progress at `step` (called every log interval)."""
    if not self._on:
      return
    now = time.perf_counter()
    elapsed, done = now - self._t0, step - self._start
    # Rates from the first report on: the first interval includes compiling.
    if self._first is None:
      self._first = (now, step)
    elif step > self._first[1]:
      elapsed, done = now - self._first[0], step - self._first[1]
    ips = done * self._bs / max(elapsed, 1e-9)
    eta = elapsed / max(done, 1) * (self._total - step)
    shown = {k: f"{float(v):.4g}" for k, v in scalars.items() if k != "lr"}
    if self._bar is not None:
      self._bar.n = step
      self._bar.set_postfix(img_s=f"{ips:.1f}", **shown, refresh=False)
      self._bar.refresh()
      return
    items = " ".join(f"{k}={v}" for k, v in shown.items())
    say(
      f"step {step}/{self._total} {items} | {ips:.1f} img/s | ETA {_hms(eta)}"
    )

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def say(message: str) -> None:
  """Prints a progress or result line to stdout, on process 0 only.

  Plain prints: library INFO logs (Orbax's are many) stay behind absl's
  verbosity flag while the run's own progress is always visible.
  """
  if jax.process_index() == 0:
    print(message, flush=True)


def _hms(seconds: float) -> str:
  s = int(seconds)
  return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
