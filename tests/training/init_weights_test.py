"""config.model.init: a run's encoder starts from an encoder folder (or
PyTorch weights: tests/pretrained/torch_import_test.py); bad inits are
named."""

import jax
import numpy as np
import pytest
import torch

from configs import quickstart
from idlearn import encoders, errors, pretrained
from idlearn.training import loop

RESNET18 = {"widths": (16, 32, 64, 128), "last_stride": 1}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  """An encoder folder of quarter-width ResNet-18 weights (not init
  values)."""
  tmp = tmp_path_factory.mktemp("w")
  model = encoders.get_encoder("resnet18", **RESNET18)
  x = np.zeros((1, 32, 16, 3), np.float32)
  variables = jax.jit(model.init)(jax.random.key(7), x)
  variables = jax.tree.map(lambda a: a + 0.1 * np.sin(a.size), variables)
  folder = tmp / "enc"
  pretrained.save(folder, {"name": "resnet18", **RESNET18}, variables)
  return folder, model, variables


def _step0_emb(config, tmp_path, images):
  run = loop.build(config, loader=[])
  state = loop.init_state(run, images[:1])
  return run.encoder(state, images)["emb"]


def test_encoder_folder_init_gives_its_features_at_step_0(weights, tmp_path):
  folder, model, variables = weights
  config = quickstart.get_config("smoke")
  config.model.encoder, config.model.encoder_kw = "resnet18", RESNET18
  config.model.init = str(folder)
  images = np.random.default_rng(0).integers(0, 256, (6, 32, 16, 3), np.uint8)
  got = _step0_emb(config, tmp_path, images)
  from idlearn.augment import preprocess

  want, _ = model.apply(variables, preprocess(images, (32, 16)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  config.model.encoder_kw = {"last_stride": 1}  # another architecture
  with pytest.raises(errors.ConfigError, match="holds encoder"):
    _step0_emb(config, tmp_path, images)


def test_pytorch_file_init_names_missing_keys(tmp_path):
  config = quickstart.get_config("smoke")
  config.model.encoder, config.model.encoder_kw = "resnet18", RESNET18
  state = {"conv1.weight": torch.zeros(16, 3, 7, 7)}
  torch.save(state, tmp_path / "w.pt")
  config.model.init = str(tmp_path / "w.pt")
  images = np.zeros((2, 32, 16, 3), np.uint8)
  with pytest.raises(errors.ConfigError, match="missing key 'bn1.weight'"):
    _step0_emb(config, tmp_path, images)
  config.model.init = str(tmp_path / "nope.pt")
  with pytest.raises(errors.ConfigError, match="no such file"):
    _step0_emb(config, tmp_path, images)
