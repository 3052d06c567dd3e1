"""Metric files (JSON lines, TensorBoard events) and the progress lines."""

import json
import os
import struct
import tempfile

import pytest

from idlearn.training import writer


def _events(directory):
  """Scalars from TensorBoard event files, parsed from the TFRecord frames."""
  from tensorboardX.proto import event_pb2

  out = []
  for name in sorted(os.listdir(directory)):
    data = open(os.path.join(directory, name), "rb").read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos : pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
      pos += 12 + length + 4
      for v in event.summary.value:
        out.append((event.step, v.tag, v.simple_value))
  return out


def test_jsonl_and_tensorboard_hold_the_same_scalars():
  workdir = tempfile.mkdtemp()
  w = writer.MetricWriter(workdir)
  w.write(3, {"train/loss": 1.5, "train/lr": 0.25})
  w.write(4, {"train/loss": 1.25})
  w.close()
  lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
  assert lines == [
    {"step": 3, "train/loss": 1.5, "train/lr": 0.25},
    {"step": 4, "train/loss": 1.25},
  ]
  assert sorted(_events(os.path.join(workdir, "tensorboard"))) == [
    (3, "train/loss", 1.5),
    (3, "train/lr", 0.25),
    (4, "train/loss", 1.25),
  ]


def test_progress_prints_plain_lines_with_throughput_and_eta(
  capsys, monkeypatch
):
  clock = iter([100.0, 110.0, 112.0])  # start, 10 s later, 2 s later
  monkeypatch.setattr(writer.time, "perf_counter", lambda: next(clock))
  p = writer.Progress(start=20, total=120, batch_size=64)
  p.update(30, {"loss": 0.5, "lr": 0.1})
  p.update(40, {"loss": 0.25})
  p.close()
  out = capsys.readouterr().out.splitlines()
  # 10 steps x 64 images in 10 s; 90 steps left at 1 s/step.
  assert out[0] == "step 30/120 loss=0.5 | 64.0 img/s | ETA 0:01:30"
  # Later rates leave out the first interval (it includes compilation).
  assert out[1] == "step 40/120 loss=0.25 | 320.0 img/s | ETA 0:00:16"


@pytest.mark.parametrize("seconds, text", [(59, "0:00:59"), (3725, "1:02:05")])
def test_hms(seconds, text):
  assert writer._hms(seconds) == text
