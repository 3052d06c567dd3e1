"""from_torch: eval-mode outputs equal the PyTorch model's on random inputs.

PyTorch side:
  - ResNet-18/50: a test-only definition below with torchvision's exact
    state-dict key names and forward (torchvision is not installed here).
  - ViT: a test-only definition with timm's exact key names and forward
    (timm is not installed); position embeddings resized with
    torch.nn.functional.interpolate(bicubic, antialias=True) as timm's
    resample_abs_pos_embed does.
  - ResNet-50-IBN-a, OSNet, OSNet-AIN: the real torchreid modules, loaded from
    their installed files (torchreid's package __init__ needs cv2, so the
    files are loaded directly).
Weights and batch-norm statistics are random (statistics calibrated on a
batch, then perturbed, so activations keep a sane scale through 50 layers).
"""

import jax
import numpy as np
import pytest
import torch
from peers import peer_module
from torch import nn

from idlearn import encoders, pretrained

TOL = 1e-4


def _torchreid(module: str):
  return peer_module("torchreid", f"reid/models/{module}.py")


# --- torchvision ResNet (key names and forward of torchvision.models) ------
class _TVBasic(nn.Module):
  expansion = 1

  def __init__(self, cin, planes, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU()
    self.downsample = None
    if stride != 1 or cin != planes:
      self.downsample = nn.Sequential(
        nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
      )

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    idt = x if self.downsample is None else self.downsample(x)
    return self.relu(y + idt)


class _TVBottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin, planes, stride):
    super().__init__()
    out = planes * 4
    self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(out)
    self.relu = nn.ReLU()
    self.downsample = None
    if stride != 1 or cin != out:
      self.downsample = nn.Sequential(
        nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out)
      )

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    idt = x if self.downsample is None else self.downsample(x)
    return self.relu(y + idt)


class TorchvisionResNet(nn.Module):
  """torchvision.models.resNet; forward returns the pooled feature.

  `widths` and `last_stride` (defaults: torchvision's) give the narrow,
  last-stride-1 variants idlearn trains (the same state-dict names)."""

  def __init__(
    self,
    block,
    layers,
    num_classes=1000,
    widths=(64, 128, 256, 512),
    last_stride=2,
  ):
    super().__init__()
    self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(widths[0])
    self.relu = nn.ReLU()
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = widths[0]
    for i, (n, planes) in enumerate(zip(layers, widths, strict=True)):
      blocks = []
      for b in range(n):
        stride = 2 if (i > 0 and b == 0) else 1
        if i == 3 and b == 0:
          stride = last_stride
        blocks.append(block(cin, planes, stride))
        cin = planes * block.expansion
      setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    for i in range(1, 5):
      x = getattr(self, f"layer{i}")(x)
    return x.mean(dim=(2, 3))  # avgpool + flatten, before fc


# --- timm VisionTransformer (key names and forward of timm) ----------------
class _TimmAttention(nn.Module):
  def __init__(self, dim, heads):
    super().__init__()
    self.num_heads, self.scale = heads, (dim // heads) ** -0.5
    self.qkv = nn.Linear(dim, dim * 3)
    self.proj = nn.Linear(dim, dim)

  def forward(self, x):
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class _TimmMlp(nn.Module):
  def __init__(self, dim, hidden):
    super().__init__()
    self.fc1, self.act, self.fc2 = (
      nn.Linear(dim, hidden),
      nn.GELU(),
      nn.Linear(hidden, dim),
    )

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


class _TimmBlock(nn.Module):
  def __init__(self, dim, heads):
    super().__init__()
    self.norm1 = nn.LayerNorm(dim, eps=1e-6)
    self.attn = _TimmAttention(dim, heads)
    self.norm2 = nn.LayerNorm(dim, eps=1e-6)
    self.mlp = _TimmMlp(dim, 4 * dim)

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
  def __init__(self, patch, dim):
    super().__init__()
    self.proj = nn.Conv2d(3, dim, patch, patch)

  def forward(self, x):
    return self.proj(x).flatten(2).transpose(1, 2)


class TimmViT(nn.Module):
  """timm VisionTransformer (class token, global_pool="token")."""

  def __init__(self, dim, depth, heads, patch=16, grid=(14, 14), classes=1000):
    super().__init__()
    self.patch_embed = _PatchEmbed(patch, dim)
    self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
    self.pos_embed = nn.Parameter(torch.randn(1, 1 + grid[0] * grid[1], dim))
    self.blocks = nn.Sequential(*[_TimmBlock(dim, heads) for _ in range(depth)])
    self.norm = nn.LayerNorm(dim, eps=1e-6)
    self.head = nn.Linear(dim, classes)

  def forward(self, x, pooling="cls"):
    x = self.patch_embed(x)
    x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = self.norm(self.blocks(x + self.pos_embed))
    return x[:, 0] if pooling == "cls" else x[:, 1:].mean(dim=1)


def _randomise(model: nn.Module, images: torch.Tensor, seed: int) -> None:
  """Random affine norm params; BN stats from a batch, then perturbed."""
  gen = torch.Generator().manual_seed(seed)
  norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d, nn.LayerNorm)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, norms) and m.weight is not None:
        m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
      if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
        m.momentum = 1.0  # running stats := this batch's stats
    model.train()
    model(images)
    for m in model.modules():
      if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
        m.running_mean.add_(
          torch.randn(m.running_mean.shape, generator=gen) * 0.1
        )
        m.running_var.mul_(
          torch.rand(m.running_var.shape, generator=gen) * 0.5 + 0.75
        )
  model.eval()


def _compare(arch, torch_model, images, **kw):
  torch.manual_seed(0)
  images_t = torch.from_numpy(images).permute(0, 3, 1, 2)
  _randomise(torch_model, images_t, seed=1)
  with torch.no_grad():
    want = torch_model(images_t).numpy()
  variables = pretrained.from_torch(arch, torch_model.state_dict(), **kw)
  model = encoders.get_encoder(arch, **kw)
  got, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(
    variables, images
  )
  assert got.shape == want.shape
  _assert_close(got, want)


def _assert_close(got, want):
  """max |got - want| <= TOL after dividing both by max |want|.

  Features after 18-50 random residual layers reach hundreds (the residual
  stream grows with depth); float32 then differs by ~1e-6 relative, so the
  test compares on the unit scale.
  """
  scale = float(np.abs(want).max())
  assert 0.05 < scale < 1e4, scale  # outputs are in a sane range
  np.testing.assert_allclose(
    np.asarray(got) / scale, want / scale, rtol=0, atol=TOL
  )


def _images(n=2, h=64, w=32, seed=0):
  return (
    np.random.default_rng(seed).normal(size=(n, h, w, 3)).astype(np.float32)
  )


@pytest.mark.parametrize(
  "arch,block,layers",
  [
    ("resnet18", _TVBasic, (2, 2, 2, 2)),
    ("resnet50", _TVBottleneck, (3, 4, 6, 3)),
  ],
)
def test_torchvision_resnet(arch, block, layers):
  torch.manual_seed(0)
  _compare(arch, TorchvisionResNet(block, layers), _images())


def test_ibn_net_resnet50_ibn_a():
  torch.manual_seed(0)
  ref = _torchreid("resnet_ibn_a").resnet50_ibn_a(num_classes=10)
  _compare("resnet50_ibn_a", ref, _images())


@pytest.mark.parametrize(
  "arch,module",
  [
    ("osnet_x1_0", "osnet"),
    ("osnet_ain_x1_0", "osnet_ain"),
    ("osnet_x0_25", "osnet"),
  ],
)
def test_torchreid_osnet(arch, module):
  torch.manual_seed(0)
  ref = getattr(_torchreid(module), arch)(num_classes=10, pretrained=False)
  _compare(arch, ref, _images(n=3))


def _timm_resample(pos_embed, new_grid):
  """timm's resample_abs_pos_embed: bicubic, antialias, class token kept."""
  d, side = pos_embed.shape[-1], int((pos_embed.shape[1] - 1) ** 0.5)
  grid = pos_embed[:, 1:].reshape(1, side, side, d).permute(0, 3, 1, 2)
  grid = torch.nn.functional.interpolate(
    grid, size=new_grid, mode="bicubic", antialias=True, align_corners=False
  )
  grid = grid.permute(0, 2, 3, 1).reshape(1, -1, d)
  return torch.cat([pos_embed[:, :1], grid], dim=1)


@pytest.mark.parametrize(
  "arch,dim,heads,patch,size,pooling",
  [
    ("vit_ti16", 192, 3, 16, (64, 32), "cls"),  # resized from 14 x 14
    ("vit_ti16", 192, 3, 16, (224, 224), "cls"),  # as trained
    ("vit_s8", 384, 6, 8, (48, 32), "mean"),  # 28 x 28 -> 6 x 4
    ("vit_ti16", 192, 3, 16, (320, 320), "cls"),
  ],  # upsampled 14 -> 20
)
def test_timm_vit(arch, dim, heads, patch, size, pooling):
  torch.manual_seed(0)
  src = TimmViT(dim, 12, heads, patch=patch, grid=(224 // patch,) * 2)
  _randomise(src, torch.zeros(1, 3, 224, 224), seed=1)
  sd = src.state_dict()
  grid = (size[0] // patch, size[1] // patch)
  ref = TimmViT(dim, 12, heads, patch=patch, grid=grid).eval()
  ref.load_state_dict(
    {**sd, "pos_embed": _timm_resample(sd["pos_embed"], grid)}
  )
  images = (
    _images(h=size[0], w=size[1])
    if size[0] < 224
    else _images(n=1, h=size[0], w=size[1])
  )
  with torch.no_grad():
    want = ref(torch.from_numpy(images).permute(0, 3, 1, 2), pooling).numpy()
  kw = dict(img_size=size, pooling=pooling)
  variables = pretrained.from_torch(arch, sd, **kw)
  model = encoders.get_encoder(arch, **kw)
  got, _ = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
  _assert_close(got, want)


def test_key_errors_name_key_and_both_shapes():
  torch.manual_seed(0)
  sd = dict(TorchvisionResNet(_TVBasic, (2, 2, 2, 2)).state_dict())
  sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)  # mis-shaped
  del sd["layer2.0.bn1.running_var"]  # missing
  sd["layer5.0.conv1.weight"] = torch.zeros(8, 8, 3, 3)  # unexpected
  with pytest.raises(ValueError) as err:
    pretrained.from_torch("resnet18", sd)
  msg = str(err.value)
  assert (
    "'layer1.0.conv1.weight' has shape (64, 64, 1, 1) but resnet18 "
    "expects (64, 64, 3, 3)"
  ) in msg
  assert "missing key 'layer2.0.bn1.running_var' (expected shape (128,))" in msg
  assert "unexpected key 'layer5.0.conv1.weight' with shape (8, 8, 3, 3)" in msg


def test_classifier_dropped_and_module_prefix_stripped():
  torch.manual_seed(0)
  ref = TorchvisionResNet(_TVBasic, (2, 2, 2, 2), num_classes=7)
  sd = {"module." + k: v for k, v in ref.state_dict().items()}
  variables = pretrained.from_torch("resnet18", sd, pooling="gem")
  assert float(variables["params"]["gem"]["p"][0]) == 3.0  # GeM's default
  np.testing.assert_array_equal(
    variables["params"]["layer1_0"]["conv2"]["kernel"],
    ref.layer1[0].conv2.weight.detach().numpy().transpose(2, 3, 1, 0),
  )


@pytest.mark.parametrize(
  "old,new", [((14, 14), (16, 8)), ((14, 14), (20, 24)), ((7, 5), (3, 9))]
)
def test_resize_pos_embed_matches_torch_interpolate(old, new):
  pos = torch.randn(1, 1 + old[0] * old[1], 6)
  grid = pos[:, 1:].reshape(1, *old, 6).permute(0, 3, 1, 2)
  grid = torch.nn.functional.interpolate(
    grid, size=new, mode="bicubic", antialias=True, align_corners=False
  )
  want = torch.cat(
    [pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, 6)], dim=1
  ).numpy()
  got = pretrained.resize_pos_embed(pos.numpy(), new, old_grid=old)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_config_model_init_from_a_pytorch_file_gives_its_features(tmp_path):
  """A run whose config.model.init is a torchvision .pt starts (step 0)
  with the PyTorch model's features; the method's heads start fresh."""
  from configs import quickstart
  from idlearn.training import loop

  torch_model = TorchvisionResNet(_TVBasic, (2, 2, 2, 2))
  _randomise(torch_model, torch.from_numpy(_images(4).transpose(0, 3, 1, 2)), 3)
  torch.save(torch_model.state_dict(), tmp_path / "r18.pt")
  config = quickstart.get_config("smoke")
  config.model.encoder, config.model.encoder_kw = "resnet18", {}
  config.model.init = str(tmp_path / "r18.pt")
  for view in config.views.values():
    view.size = (64, 32)
  config.input.image_size = (64, 32)
  run = loop.build(config, loader=[])
  state = loop.init_state(run, np.zeros((1, 64, 32, 3), np.uint8))
  uint8 = np.random.default_rng(1).integers(0, 256, (4, 64, 32, 3), np.uint8)
  got = run.encoder(state, uint8)["emb"]
  from idlearn.augment import preprocess

  nchw = torch.from_numpy(np.array(preprocess(uint8, (64, 32))))
  with torch.no_grad():
    want = torch_model(nchw.permute(0, 3, 1, 2)).numpy()
  _assert_close(got, want)
