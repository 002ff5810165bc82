"""RepViT backbones that return four feature maps (strides 4, 8, 16, 32).

Paper: "RepViT: Revisiting Mobile CNN From ViT Perspective", Wang et al., CVPR 2024 (arXiv 2307.09283).
Layer for layer these are timm's `repvit_m1`, `repvit_m2`, `repvit_m3` (the first release, whose
1x1 depthwise branch carries its own BN: `legacy`) and `repvit_m0_9`, `repvit_m1_0`, `repvit_m1_1`,
`repvit_m1_5`, `repvit_m2_3` (the later release, one BN after the sum of the branches), without the
classifier. The four maps are the outputs of the four stages.

A RepViT block is a MobileNetV3-style block re-arranged like a ViT block: a "token mixer" (a
re-parameterisable depthwise 3x3 + 1x1 + identity, optionally followed by squeeze-excitation) and a
"channel mixer" (a 1x1 -> GELU -> 1x1 MLP with a residual). Between stages a downsample block halves
the resolution with a strided depthwise conv and widens with a 1x1 conv.

Parameter and buffer names are timm's, so a timm checkpoint loads as it is:
`RepViTM1(weights="repvit_m1.pth")`; the official release's checkpoints (`features.<i>...` names, inside
`{"model": ...}`) are renamed to timm's on loading. Only torch is needed; nothing is downloaded.
Any input whose height and width are multiples of 32 works, at any batch size.
"""

import json
import re
import struct
from pathlib import Path

import torch
import torch.nn as nn

__all__ = [
    "RepViTM1",
    "repvit_m1",
    "RepViTM2",
    "repvit_m2",
    "RepViTM3",
    "repvit_m3",
    "RepViTM0_9",
    "repvit_m0_9",
    "RepViTM1_0",
    "repvit_m1_0",
    "RepViTM1_1",
    "repvit_m1_1",
    "RepViTM1_5",
    "repvit_m1_5",
    "RepViTM2_3",
    "repvit_m2_3",
]


# ---------------------------------------------------------------------------------------------------------
# Network descriptions: width and number of blocks of the four stages (strides 4, 8, 16, 32)
# ---------------------------------------------------------------------------------------------------------

ARCHS = {
    # name: (widths, depths, legacy)
    "m1": ((48, 96, 192, 384), (2, 2, 14, 2), True),
    "m2": ((64, 128, 256, 512), (2, 2, 12, 2), True),
    "m3": ((64, 128, 256, 512), (4, 4, 18, 2), True),
    "m0_9": ((48, 96, 192, 384), (2, 2, 14, 2), False),
    "m1_0": ((56, 112, 224, 448), (2, 2, 14, 2), False),
    "m1_1": ((64, 128, 256, 512), (2, 2, 12, 2), False),
    "m1_5": ((64, 128, 256, 512), (4, 4, 24, 4), False),
    "m2_3": ((80, 160, 320, 640), (6, 6, 34, 2), False),
}
MLP_RATIO = 2
KERNEL_SIZE = 3


def make_divisible(value, divisor=8):
    """Round a channel count to the nearest multiple of `divisor` (at least `divisor`)."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


# ---------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------


def fold_bn(conv, bn):
    """A new conv, with bias, that computes `bn(conv(x))` as BatchNorm does in eval mode (running statistics).

    Folded convs are frozen (requires_grad False), as Ultralytics' and YOLOv5's own fused convs are.
    """
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      dilation=conv.dilation, groups=conv.groups, bias=True).to(conv.weight).requires_grad_(False)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


def replace_fusable(module):
    """Replace, depth first, every child that has a `fused()` form (ConvNorm, RepVggDw) by that form."""
    for name, child in list(module.named_children()):
        if hasattr(child, "fused"):
            setattr(module, name, child.fused())
        else:
            replace_fusable(child)


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d under a type of its own.

    Ultralytics' and YOLOv5's `initialize_weights` set eps=1e-3 on every module whose type *is*
    nn.BatchNorm2d; a checkpoint's statistics were computed with timm's eps=1e-5, so a subclass keeps them
    meaning what they meant (the detector still counts it as a norm layer: isinstance holds).
    """


class ConvNorm(nn.Sequential):
    """Conv (no bias) + BatchNorm, children named `c` and `bn` as in the reference code.

    `bn_weight_init` 0 makes a residual branch start as the identity (used on the MLP's last layer).
    """

    def __init__(self, in_chs, out_chs, kernel=1, stride=1, groups=1, bn_weight_init=1.0):
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chs, out_chs, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False))
        self.add_module("bn", BatchNorm2d(out_chs))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def fused(self):
        """The single conv (with bias) that computes this pair in eval mode."""
        return fold_bn(self.c, self.bn)


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: global average, 1x1 reduce (to a quarter, multiple of 8), ReLU, 1x1, sigmoid gate."""

    def __init__(self, channels, ratio=0.25):
        super().__init__()
        reduced = make_divisible(channels * ratio)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class RepVggDw(nn.Module):
    """Depthwise kxk conv + depthwise 1x1 conv + identity, summed (foldable into one conv after training).

    `legacy` (m1/m2/m3): the 1x1 branch is a ConvNorm and there is no BN after the sum; otherwise the
    1x1 branch is a plain conv with bias and one BN normalises the sum.
    """

    def __init__(self, dim, kernel, legacy):
        super().__init__()
        self.conv = ConvNorm(dim, dim, kernel, groups=dim)
        if legacy:
            self.conv1 = ConvNorm(dim, dim, 1, groups=dim)
            self.bn = None
        else:
            self.conv1 = nn.Conv2d(dim, dim, 1, groups=dim)
            self.bn = BatchNorm2d(dim)

    def forward(self, x):
        y = self.conv(x) + self.conv1(x) + x
        return self.bn(y) if self.bn is not None else y

    def fused(self):
        """The one depthwise kxk conv (with bias) that computes the three branches (and the BN) in eval mode.

        The 1x1 kernel and the identity (a 1 at the kernel's centre) are padded to kxk and added to the kxk
        kernel: the structural re-parameterisation of RepVGG, as RepViT's and timm's `fuse` do it.
        """
        conv = self.conv.fused()
        conv1 = self.conv1.fused() if isinstance(self.conv1, ConvNorm) else self.conv1
        pad = [conv.kernel_size[0] // 2] * 4
        identity = nn.functional.pad(torch.ones_like(conv1.weight), pad)
        merged = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, 1, conv.padding,
                           groups=conv.groups).to(conv.weight).requires_grad_(False)
        with torch.no_grad():
            merged.weight.copy_(conv.weight + nn.functional.pad(conv1.weight, pad) + identity)
            merged.bias.copy_(conv.bias + conv1.bias)
        return fold_bn(merged, self.bn) if self.bn is not None else merged


class RepVitMlp(nn.Module):
    """Channel mixer: 1x1 expand -> GELU -> 1x1 project (its BN starts at zero)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.conv1 = ConvNorm(dim, hidden)
        self.act = nn.GELU()
        self.conv2 = ConvNorm(hidden, dim, bn_weight_init=0.0)

    def forward(self, x):
        return self.conv2(self.act(self.conv1(x)))


# ---------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------


class RepViTBlock(nn.Module):
    """Token mixer (RepVggDw [+ SE]) then a residual channel-mixer MLP; keeps resolution and width."""

    def __init__(self, dim, mlp_ratio, kernel, use_se, legacy):
        super().__init__()
        self.token_mixer = RepVggDw(dim, kernel, legacy)
        self.se = SqueezeExcite(dim) if use_se else None
        self.channel_mixer = RepVitMlp(dim, dim * mlp_ratio)

    def forward(self, x):
        x = self.token_mixer(x)
        if self.se is not None:
            x = self.se(x)
        return x + self.channel_mixer(x)


class RepVitStem(nn.Module):
    """Two stride-2 3x3 convs (to half, then full width) with GELU between: stride 4."""

    def __init__(self, in_chs, out_chs):
        super().__init__()
        self.conv1 = ConvNorm(in_chs, out_chs // 2, 3, 2)
        self.act1 = nn.GELU()
        self.conv2 = ConvNorm(out_chs // 2, out_chs, 3, 2)

    def forward(self, x):
        return self.conv2(self.act1(self.conv1(x)))


class RepVitDownsample(nn.Module):
    """Between stages: a RepViT block (no SE), a stride-2 depthwise conv, a 1x1 widening conv, an MLP."""

    def __init__(self, in_dim, out_dim, mlp_ratio, kernel, legacy):
        super().__init__()
        self.pre_block = RepViTBlock(in_dim, mlp_ratio, kernel, use_se=False, legacy=legacy)
        self.spatial_downsample = ConvNorm(in_dim, in_dim, kernel, 2, groups=in_dim)
        self.channel_downsample = ConvNorm(in_dim, out_dim, 1)
        self.ffn = RepVitMlp(out_dim, out_dim * mlp_ratio)

    def forward(self, x):
        x = self.channel_downsample(self.spatial_downsample(self.pre_block(x)))
        return x + self.ffn(x)


class RepVitStage(nn.Module):
    """Optional downsample, then `depth` RepViT blocks with squeeze-excitation on every other one."""

    def __init__(self, in_dim, out_dim, depth, mlp_ratio, kernel, legacy, downsample):
        super().__init__()
        self.downsample = RepVitDownsample(in_dim, out_dim, mlp_ratio, kernel, legacy) if downsample else None
        self.blocks = nn.Sequential(
            *[RepViTBlock(out_dim, mlp_ratio, kernel, use_se=i % 2 == 0, legacy=legacy) for i in range(depth)])

    def forward(self, x):
        if self.downsample is not None:
            x = self.downsample(x)
        return self.blocks(x)


# ---------------------------------------------------------------------------------------------------------
# The backbones
# ---------------------------------------------------------------------------------------------------------


class RepViT(nn.Module):
    """RepViT trunk (stem + four stages) built from an `ARCHS` entry; the subclasses pick the entry.

    `forward(x)` returns the four stage outputs (strides 4, 8, 16, 32); `width_list` (and its alias
    `channel`) are the stage widths. `weights`: optional timm checkpoint path (or state dict) to load;
    True/False/None (the tutorials' `pretrained` flag) name no file, so only `default_weights` can load.
    """

    variant = None
    # A checkpoint every instance loads when no `weights` is given: `mbpatch apply --weights FILE` sets it in
    # AddModules/__init__.py, so the model yaml needs no path argument.
    default_weights = None

    def __init__(self, weights=None):
        super().__init__()
        if self.variant not in ARCHS:
            raise TypeError(f"RepViT needs a `variant` from {sorted(ARCHS)}: use RepViTM1, ... or subclass it")
        widths, depths, legacy = ARCHS[self.variant]
        self.stem = RepVitStem(3, widths[0])
        stages, in_dim = [], widths[0]
        for i, (width, depth) in enumerate(zip(widths, depths)):
            stages.append(RepVitStage(in_dim, width, depth, MLP_RATIO, KERNEL_SIZE, legacy, downsample=i > 0))
            in_dim = width
        self.stages = nn.Sequential(*stages)
        self.width_list = list(widths)
        self.channel = self.width_list
        if isinstance(weights, bool):  # a tutorial yaml's `pretrained` flag, e.g. `repvit_m1, [False]`
            weights = None
        weights = self.default_weights if weights is None else weights
        if weights is not None:
            load_timm_weights(self, weights)

    def forward(self, x):
        x = self.stem(x)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs

    @torch.no_grad()
    def reparameterize(self):
        """Fold for deployment, in place: every conv + BN pair becomes one conv and every token mixer's three
        branches (kxk, 1x1, identity) one depthwise kxk conv, so no BatchNorm and no branch is left.

        Eval-mode outputs stay the same (up to float rounding); train after this only if you mean to
        (there is no BatchNorm left to update). A second call changes nothing. The detector's own
        `model.fuse()` calls this once mbpatch's `fuse` recipe is applied.
        """
        replace_fusable(self)
        return self


class RepViTM1(RepViT):
    """RepViT-M1 (timm `repvit_m1`): 48, 96, 192, 384 channels."""

    variant = "m1"


class RepViTM2(RepViT):
    """RepViT-M2 (timm `repvit_m2`): 64, 128, 256, 512 channels."""

    variant = "m2"


class RepViTM3(RepViT):
    """RepViT-M3 (timm `repvit_m3`): 64, 128, 256, 512 channels, deeper."""

    variant = "m3"


class RepViTM0_9(RepViT):
    """RepViT-M0.9 (timm `repvit_m0_9`): 48, 96, 192, 384 channels."""

    variant = "m0_9"


class RepViTM1_0(RepViT):
    """RepViT-M1.0 (timm `repvit_m1_0`): 56, 112, 224, 448 channels."""

    variant = "m1_0"


class RepViTM1_1(RepViT):
    """RepViT-M1.1 (timm `repvit_m1_1`): 64, 128, 256, 512 channels."""

    variant = "m1_1"


class RepViTM1_5(RepViT):
    """RepViT-M1.5 (timm `repvit_m1_5`): 64, 128, 256, 512 channels, deeper."""

    variant = "m1_5"


class RepViTM2_3(RepViT):
    """RepViT-M2.3 (timm `repvit_m2_3`): 80, 160, 320, 640 channels."""

    variant = "m2_3"


repvit_m1 = RepViTM1
repvit_m2 = RepViTM2
repvit_m3 = RepViTM3
repvit_m0_9 = RepViTM0_9
repvit_m1_0 = RepViTM1_0
repvit_m1_1 = RepViTM1_1
repvit_m1_5 = RepViTM1_5
repvit_m2_3 = RepViTM2_3


# ---------------------------------------------------------------------------------------------------------
# Loading timm checkpoints (torch only: .pth/.pt/.bin via torch.load, .safetensors read directly)
# ---------------------------------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _read_safetensors(path):
    """Read a .safetensors file into a dict of tensors without the `safetensors` package."""
    data = Path(path).read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len].decode("utf-8"))
    body = bytearray(data[8 + header_len:])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = _SAFETENSORS_DTYPES[info["dtype"]]
        count = (end - start) // torch.empty((), dtype=dtype).element_size()
        flat = torch.frombuffer(body, dtype=dtype, count=count, offset=start) if count else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(info["shape"]).clone()
    return tensors


def _read_checkpoint(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13 has no weights_only
        return torch.load(str(path), map_location="cpu")


def _as_state_dict(obj):
    """Unwrap the usual checkpoint containers ({'state_dict': ...}, {'model': ...}, a module)."""
    for _ in range(3):
        if isinstance(obj, nn.Module):
            obj = obj.state_dict()
        if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            for key in ("state_dict", "model", "state_dict_ema", "model_ema", "module"):
                if isinstance(obj.get(key), (dict, nn.Module)):
                    obj = obj[key]
                    break
            else:
                break
    if not isinstance(obj, dict):
        raise TypeError(f"expected a state dict, got {type(obj).__name__}")
    obj = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


# The official release (THU-MIG/RepViT) keeps the stem and every block in one list, `features`: features.0 is
# the stem (a Sequential: conv, GELU, conv); each later entry is one block. A stride-1 block holds
# `token_mixer` = Sequential(RepVGGDW, SE or Identity) and `channel_mixer` = Residual(m=Sequential(conv, GELU,
# conv)); a stride-2 block's token mixer is Sequential(strided depthwise conv, Identity, 1x1 conv). timm (and
# these classes) split the same layers into stages: the block before each stride-2 block is that stage's
# `downsample.pre_block`, and the stride-2 block is the rest of `downsample`. Renames per entry kind:
_OFFICIAL_STEM = (("0.", "conv1."), ("2.", "conv2."))
_OFFICIAL_BLOCK = (("token_mixer.0.", "token_mixer."), ("token_mixer.1.", "se."),
                   ("channel_mixer.m.0.", "channel_mixer.conv1."), ("channel_mixer.m.2.", "channel_mixer.conv2."))
_OFFICIAL_DOWNSAMPLE = (("token_mixer.0.", "spatial_downsample."), ("token_mixer.2.", "channel_downsample."),
                        ("channel_mixer.m.0.", "ffn.conv1."), ("channel_mixer.m.2.", "ffn.conv2."))


def _official_to_timm_names(state, module):
    """An official RepViT state dict with timm's names, read off `module`'s own stages (the classifier dropped;
    an entry `module` has no place for keeps its name, so the shape/name check reports it)."""
    entries = [("stem.", _OFFICIAL_STEM)]
    for i, stage in enumerate(module.stages):
        if stage.downsample is not None:
            entries += [(f"stages.{i}.downsample.pre_block.", _OFFICIAL_BLOCK),
                        (f"stages.{i}.downsample.", _OFFICIAL_DOWNSAMPLE)]
        entries += [(f"stages.{i}.blocks.{j}.", _OFFICIAL_BLOCK) for j in range(len(stage.blocks))]
    out = {}
    for key, value in state.items():
        found = re.match(r"features\.(\d+)\.(.+)$", key)
        if found is None:
            continue  # classifier.*
        index, rest = int(found.group(1)), found.group(2)
        name = key
        if index < len(entries):
            prefix, renames = entries[index]
            for old, new in renames:
                if rest.startswith(old):
                    name = prefix + new + rest[len(old):]
                    break
        out[name] = value
    return out


def load_timm_weights(module, path_or_state_dict):
    """Load a timm checkpoint (file path or state dict) into `module` by parameter name.

    Keys the module does not have (the classifier, the 1x1 head conv, ...) are ignored. Every parameter
    and buffer of the module must be in the checkpoint with the same shape (BN's `num_batches_tracked`
    may be absent); otherwise nothing is loaded and a RuntimeError lists the offending names.
    Returns the list of ignored checkpoint keys.
    """
    source = path_or_state_dict
    if isinstance(source, (str, Path)):
        source = _read_checkpoint(source)
    state = _as_state_dict(source)
    if any(k.startswith("features.") for k in state) and not any(k.startswith("stem.") for k in state):
        state = _official_to_timm_names(state, module)  # an official RepViT release checkpoint
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    if missing or mismatched:
        name = path_or_state_dict if isinstance(path_or_state_dict, (str, Path)) else "state dict"
        lines = [f"cannot load {name} into {type(module).__name__}:"]
        if missing:
            lines.append(f"missing keys ({len(missing)}): " + ", ".join(missing))
        if mismatched:
            lines.append(f"shape mismatch ({len(mismatched)}): " + "; ".join(mismatched))
        raise RuntimeError("\n".join(lines))
    module.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
    return [k for k in state if k not in own]
