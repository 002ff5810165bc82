"""MobileNetV2 backbone that returns four feature maps (strides 4, 8, 16, 32).

Paper: "MobileNetV2: Inverted Residuals and Linear Bottlenecks", Sandler et al., CVPR 2018
(arXiv 1801.04381). Layer for layer this is timm's `mobilenetv2_100` (= torchvision's
`mobilenet_v2().features[:18]`) without the classification head: the final 1x1 conv to 1280
channels, its norm and the classifier are left out because a detector never uses them.

Parameter and buffer names are timm's (`conv_stem`, `bn1`, `blocks.<stage>.<block>.conv_pw`, ...),
so a timm checkpoint of `mobilenetv2_100` loads as it is: `MobileNetV2(weights="model.pth")`.
Only torch is needed; nothing is downloaded.

Wide taps (`MobileNetV2_050_Wide`, `MobileNetV2_075_Wide`, `MobileNetV2Wide`): the maps are taken where
SSDLite takes them (paper, section 6.2): at strides 4, 8 and 16 the output of the 1x1 expansion of the next
stage's first block (before its stride-2 depthwise conv: 6x the stage's width), at stride 32 the final 1x1
conv to 1280 channels (timm's `conv_head` + `bn2`, kept for these). The stage outputs of a thin network
(16/48/160 channels at width 0.5) hand a detector's neck very little; the expansions are computed anyway.
"""

import json
import math
import struct
from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["MobileNetV2", "mobilenetv2", "MobileNetV2_075", "mobilenetv2_075", "MobileNetV2_050", "mobilenetv2_050",
           "MobileNetV2Wide", "mobilenetv2_wide", "MobileNetV2_075_Wide", "mobilenetv2_075_wide",
           "MobileNetV2_050_Wide", "mobilenetv2_050_wide"]


# ---------------------------------------------------------------------------------------------------------
# Network description
# ---------------------------------------------------------------------------------------------------------

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280  # the final 1x1 conv (timm's `conv_head`), at every width <= 1 (timm keeps 1280)

# One row per stage: (block, repeats, kernel, stride of the first block, expansion ratio, out channels).
#   "ds": depthwise-separable block (depthwise kxk, then 1x1 projection), the t=1 block of the paper
#   "ir": inverted residual (1x1 expansion, depthwise kxk, 1x1 linear projection)
STAGES = (
    ("ds", 1, 3, 1, 1, 16),  # stride 2
    ("ir", 2, 3, 2, 6, 24),  # stride 4   -> output 1
    ("ir", 3, 3, 2, 6, 32),  # stride 8   -> output 2
    ("ir", 4, 3, 2, 6, 64),  # stride 16
    ("ir", 3, 3, 1, 6, 96),  # stride 16  -> output 3
    ("ir", 3, 3, 2, 6, 160),  # stride 32
    ("ir", 1, 3, 1, 6, 320),  # stride 32  -> output 4
)


def make_divisible(value, divisor=8):
    """Round a channel count to a multiple of `divisor`, never losing more than 10% (as timm does)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def scaled(stages, width):
    """The stage table with every output width multiplied by `width` and rounded as timm rounds it
    (`mobilenetv2_050`, `_075`); expansion widths follow from the rounded input widths."""
    return tuple(row[:-1] + (make_divisible(row[-1] * width),) for row in stages)


def output_stages(stages, stem_stride=2):
    """Indices of the stages whose outputs are the feature maps: the last stage at each stride."""
    strides, stride = [], stem_stride
    for row in stages:
        stride *= row[3]
        strides.append(stride)
    return [i for i, s in enumerate(strides) if i == len(strides) - 1 or strides[i + 1] != s][-4:]


# ---------------------------------------------------------------------------------------------------------
# Layers and blocks
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


def fold_pairs(module, pairs):
    """For each (conv, norm) attribute pair of `module` whose norm is still a BatchNorm: the conv absorbs it
    and the norm's slot keeps only the activation (a pair already folded is left alone)."""
    for conv_name, norm_name in pairs:
        norm = getattr(module, norm_name)
        if isinstance(norm, nn.BatchNorm2d):
            setattr(module, conv_name, fold_bn(getattr(module, conv_name), norm))
            setattr(module, norm_name, norm.act)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm2d followed by an activation, as one module.

    Being a BatchNorm2d itself keeps the checkpoint names short and equal to timm's (`bn1.weight`,
    `bn1.running_mean`); `drop` and `act` are the two child slots of timm's BatchNormAct2d (`drop`
    stays an identity here, `act` is ReLU6 or an identity for the linear bottleneck).
    """

    def __init__(self, num_features, act=True):
        super().__init__(num_features)
        self.drop = nn.Identity()
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x):
        return self.act(self.drop(super().forward(x)))


class DepthwiseSeparableConv(nn.Module):
    """Depthwise kxk conv + BN + ReLU6, then a 1x1 projection + BN without activation.

    This is the first block of MobileNetV2 (expansion ratio 1), where an expansion conv would be a
    no-op; it never has a residual connection (32 -> 16 channels).
    """

    def __init__(self, in_chs, out_chs, kernel_size=3, stride=1):
        super().__init__()
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_dw = nn.Conv2d(in_chs, in_chs, kernel_size, stride, kernel_size // 2, groups=in_chs, bias=False)
        self.bn1 = BatchNormAct2d(in_chs)
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn2 = BatchNormAct2d(out_chs, act=False)

    folds = (("conv_dw", "bn1"), ("conv_pw", "bn2"))  # (conv, norm) pairs `reparameterize` folds

    def forward(self, x):
        y = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return x + y if self.has_skip else y


class InvertedResidual(nn.Module):
    """The MobileNetV2 block: 1x1 expansion, depthwise kxk (carries the stride), 1x1 linear projection.

    ReLU6 after the first two convs only (the "linear bottleneck"); the input is added back when the
    block keeps both resolution and width.
    """

    def __init__(self, in_chs, out_chs, kernel_size=3, stride=1, exp_ratio=6.0):
        super().__init__()
        mid_chs = make_divisible(in_chs * exp_ratio)
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_pw = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
        self.bn1 = BatchNormAct2d(mid_chs)
        self.conv_dw = nn.Conv2d(mid_chs, mid_chs, kernel_size, stride, kernel_size // 2, groups=mid_chs, bias=False)
        self.bn2 = BatchNormAct2d(mid_chs)
        self.conv_pwl = nn.Conv2d(mid_chs, out_chs, 1, bias=False)
        self.bn3 = BatchNormAct2d(out_chs, act=False)

    folds = (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3"))

    def forward(self, x):
        return self.project(x, self.expand(x))

    def expand(self, x):
        """The 1x1 expansion with its norm and ReLU6: the map a wide tap takes."""
        return self.bn1(self.conv_pw(x))

    def project(self, x, expanded):
        """The rest of the block, from the expansion's output."""
        y = self.bn2(self.conv_dw(expanded))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.has_skip else y


# ---------------------------------------------------------------------------------------------------------
# The backbone
# ---------------------------------------------------------------------------------------------------------


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) as a detection backbone: `forward(x)` returns [P2, P3, P4, P5].

    The maps have 24, 32, 96 and 320 channels at strides 4, 8, 16 and 32 (`width_list`, also
    available as `channel`); any input whose height and width are multiples of 32 works.
    `weights`: optional path to a timm `mobilenetv2_100` checkpoint (or a state dict) to start from;
    True/False/None (the tutorials' `pretrained` flag) name no file, so only `default_weights` can load.
    """

    folds = (("conv_stem", "bn1"),)

    arch = STAGES
    stem_channels = STEM_CHANNELS
    wide = False  # True: SSDLite's taps (expansions, then the 1x1 conv to `HEAD_CHANNELS`), see the module doc
    # A checkpoint every instance loads when no `weights` is given: `mbpatch apply --weights FILE` sets it in
    # AddModules/__init__.py, so the model yaml needs no path argument.
    default_weights = None

    def __init__(self, weights=None):
        super().__init__()
        self.conv_stem = nn.Conv2d(3, self.stem_channels, 3, 2, 1, bias=False)
        self.bn1 = BatchNormAct2d(self.stem_channels)
        in_chs, stages = self.stem_channels, []
        for kind, repeats, kernel, stride, exp_ratio, out_chs in self.arch:
            blocks = []
            for i in range(repeats):
                s = stride if i == 0 else 1
                if kind == "ds":
                    blocks.append(DepthwiseSeparableConv(in_chs, out_chs, kernel, s))
                else:
                    blocks.append(InvertedResidual(in_chs, out_chs, kernel, s, exp_ratio))
                in_chs = out_chs
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.out_indices = output_stages(self.arch)
        self.width_list = [self.arch[i][-1] for i in self.out_indices]
        if self.wide:
            # the stage after each of the first three taps starts with a stride-2 inverted residual: tap its
            # expansion; at stride 32, timm's final 1x1 conv (names `conv_head`, `bn2` as in timm's checkpoint)
            self.conv_head = nn.Conv2d(in_chs, HEAD_CHANNELS, 1, bias=False)
            self.bn2 = BatchNormAct2d(HEAD_CHANNELS)
            self.folds = self.folds + (("conv_head", "bn2"),)
            self.expand_stages = [i + 1 for i in self.out_indices[:-1]]
            self.width_list = [self.blocks[i][0].conv_pw.out_channels for i in self.expand_stages] + [HEAD_CHANNELS]
        self.channel = self.width_list
        self._init_weights()
        if isinstance(weights, bool):  # a tutorial yaml's `pretrained` flag, e.g. `MobileNetV2, [False]`
            weights = None
        weights = self.default_weights if weights is None else weights
        if weights is not None:
            load_timm_weights(self, weights)

    def _init_weights(self):
        # TensorFlow/timm initialisation: normal convs scaled by fan-out, BN as identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.bn1(self.conv_stem(x))
        outputs = []
        for i, stage in enumerate(self.blocks):
            if self.wide and i in self.expand_stages:
                expanded = stage[0].expand(x)
                outputs.append(expanded)
                x = stage[1:](stage[0].project(x, expanded))
            else:
                x = stage(x)
            if not self.wide and i in self.out_indices:
                outputs.append(x)
        if self.wide:
            outputs.append(self.bn2(self.conv_head(x)))
        return outputs

    @torch.no_grad()
    def reparameterize(self):
        """Fold for deployment, in place: every conv absorbs the BatchNorm after it (which keeps only its
        ReLU6), so no BatchNorm is left. Eval-mode outputs stay the same (up to float rounding); a second
        call changes nothing. The detector's own `model.fuse()` calls this once mbpatch's `fuse` recipe is
        applied.
        """
        for module in self.modules():
            fold_pairs(module, getattr(module, "folds", ()))
        return self


class MobileNetV2_075(MobileNetV2):
    """MobileNetV2 at width 0.75 (timm `mobilenetv2_075`): 24, 24, 72, 240 channels at strides 4-32."""

    arch = scaled(STAGES, 0.75)
    stem_channels = make_divisible(STEM_CHANNELS * 0.75)


class MobileNetV2_050(MobileNetV2):
    """MobileNetV2 at width 0.5 (timm `mobilenetv2_050`): 16, 16, 48, 160 channels, a quarter of the compute;
    the one that makes a scale-n detector lighter than its stock backbone."""

    arch = scaled(STAGES, 0.5)
    stem_channels = make_divisible(STEM_CHANNELS * 0.5)


class MobileNetV2Wide(MobileNetV2):
    """MobileNetV2 with SSDLite's wide taps: 144, 192, 576, 1280 channels at strides 4-32 (timm `mobilenetv2_100`
    less its classifier)."""

    wide = True


class MobileNetV2_075_Wide(MobileNetV2_075):
    """MobileNetV2 width 0.75 with SSDLite's wide taps: 144, 144, 432, 1280 channels at strides 4-32."""

    wide = True


class MobileNetV2_050_Wide(MobileNetV2_050):
    """MobileNetV2 width 0.5 with SSDLite's wide taps: 96, 96, 288, 1280 channels at strides 4-32 (the stage
    outputs are 16, 16, 48, 160)."""

    wide = True


mobilenetv2 = MobileNetV2
mobilenetv2_075 = MobileNetV2_075
mobilenetv2_050 = MobileNetV2_050
mobilenetv2_wide = MobileNetV2Wide
mobilenetv2_075_wide = MobileNetV2_075_Wide
mobilenetv2_050_wide = MobileNetV2_050_Wide


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
