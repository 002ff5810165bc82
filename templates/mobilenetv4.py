"""MobileNetV4 backbones that return four feature maps (strides 4, 8, 16, 32).

Paper: "MobileNetV4 - Universal Models for the Mobile Ecosystem", Qin et al., 2024 (arXiv 2404.10518).
Layer for layer these are timm's `mobilenetv4_conv_small/medium/large` and
`mobilenetv4_hybrid_medium/large`, up to the end of the stride-32 stage: the final 1x1 conv to 960
channels, the 1280 head conv and the classifier are left out (a detector never uses them).

Blocks:
  * ConvBnAct         - plain conv + BN + activation (the conv-small network's first stages)
  * EdgeResidual      - Fused-IB: a full kxk expansion conv carrying the stride, then a 1x1 projection
  * UniversalInvertedResidual - UIB: optional depthwise conv before the expansion ("start"), 1x1
                        expansion, optional depthwise conv after it ("mid"), 1x1 projection; with both
                        depthwise convs it is ExtraDW, with only the mid one an inverted bottleneck, with
                        only the start one ConvNeXt-like, with neither an FFN
  * MobileAttention   - Mobile MQA: BN, then multi-query attention (every query head shares one key and
                        one value head; keys and values may be down-sampled by a strided depthwise conv)
The hybrid networks put a learnable per-channel layer scale on the UIB and attention branches.

Parameter and buffer names are timm's, so a timm checkpoint loads as it is:
`MobileNetV4ConvSmall(weights="mobilenetv4_conv_small.pth")`. Only torch is needed; nothing is downloaded.
Any input whose height and width are multiples of 32 works, at any batch size.
"""

import json
import math
import struct
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "MobileNetV4ConvSmall",
    "mobilenetv4_small",
    "MobileNetV4ConvMedium",
    "mobilenetv4_medium",
    "MobileNetV4ConvLarge",
    "mobilenetv4_large",
    "MobileNetV4HybridMedium",
    "mobilenetv4_hybrid_medium",
    "MobileNetV4HybridLarge",
    "mobilenetv4_hybrid_large",
]


# ---------------------------------------------------------------------------------------------------------
# Network descriptions: one tuple per block, one list per stage (each stage starts with a stride-2 block)
# ---------------------------------------------------------------------------------------------------------


def cn(kernel, stride, out_chs):
    """ConvBnAct: kxk conv + BN + activation."""
    return ("cn", dict(kernel=kernel, stride=stride, out_chs=out_chs))


def er(kernel, stride, exp_ratio, out_chs):
    """Fused-IB (EdgeResidual): kxk expansion conv with stride, then 1x1 projection."""
    return ("er", dict(kernel=kernel, stride=stride, exp_ratio=exp_ratio, out_chs=out_chs))


def uib(start_k, mid_k, stride, exp_ratio, out_chs):
    """Universal inverted bottleneck: `start_k`/`mid_k` are the depthwise kernels (0 = no such conv)."""
    return ("uib", dict(start_k=start_k, mid_k=mid_k, stride=stride, exp_ratio=exp_ratio, out_chs=out_chs))


def mqa(heads, key_dim, kv_stride, out_chs, kv_kernel=3):
    """Mobile multi-query attention; `kv_stride` 2 down-samples keys/values with a 3x3 depthwise conv."""
    return ("mqa", dict(heads=heads, key_dim=key_dim, kv_stride=kv_stride, kv_kernel=kv_kernel, out_chs=out_chs))


CONV_SMALL = dict(
    stem=32, act="relu", layer_scale=None,
    stages=[
        [cn(3, 2, 32), cn(1, 1, 32)],
        [cn(3, 2, 96), cn(1, 1, 64)],
        [uib(5, 5, 2, 3, 96), *[uib(0, 3, 1, 2, 96)] * 4, uib(3, 0, 1, 4, 96)],
        [uib(3, 3, 2, 6, 128), uib(5, 5, 1, 4, 128), uib(0, 5, 1, 4, 128), uib(0, 5, 1, 3, 128),
         *[uib(0, 3, 1, 4, 128)] * 2],
    ],
)

CONV_MEDIUM = dict(
    stem=32, act="relu", layer_scale=None,
    stages=[
        [er(3, 2, 4, 48)],
        [uib(3, 5, 2, 4, 80), uib(3, 3, 1, 2, 80)],
        [uib(3, 5, 2, 6, 160), *[uib(3, 3, 1, 4, 160)] * 2, uib(3, 5, 1, 4, 160), uib(3, 3, 1, 4, 160),
         uib(3, 0, 1, 4, 160), uib(0, 0, 1, 2, 160), uib(3, 0, 1, 4, 160)],
        [uib(5, 5, 2, 6, 256), uib(5, 5, 1, 4, 256), *[uib(3, 5, 1, 4, 256)] * 2, uib(0, 0, 1, 4, 256),
         uib(3, 0, 1, 4, 256), uib(3, 5, 1, 2, 256), uib(5, 5, 1, 4, 256), *[uib(0, 0, 1, 4, 256)] * 2,
         uib(5, 0, 1, 2, 256)],
    ],
)

CONV_LARGE = dict(
    stem=24, act="relu", layer_scale=None,
    stages=[
        [er(3, 2, 4, 48)],
        [uib(3, 5, 2, 4, 96), uib(3, 3, 1, 4, 96)],
        [uib(3, 5, 2, 4, 192), *[uib(3, 3, 1, 4, 192)] * 3, uib(3, 5, 1, 4, 192), *[uib(5, 3, 1, 4, 192)] * 5,
         uib(3, 0, 1, 4, 192)],
        [*[uib(5, 5, 2 if i == 0 else 1, 4, 512) for i in range(4)], uib(5, 0, 1, 4, 512), uib(5, 3, 1, 4, 512),
         *[uib(5, 0, 1, 4, 512)] * 2, uib(5, 3, 1, 4, 512), uib(5, 5, 1, 4, 512), *[uib(5, 0, 1, 4, 512)] * 3],
    ],
)

HYBRID_MEDIUM = dict(
    stem=32, act="relu", layer_scale=1e-5,
    stages=[
        [er(3, 2, 4, 48)],
        [uib(3, 5, 2, 4, 80), uib(3, 3, 1, 2, 80)],
        [uib(3, 5, 2, 6, 160), uib(0, 0, 1, 2, 160), uib(3, 3, 1, 4, 160), uib(3, 5, 1, 4, 160),
         mqa(4, 64, 2, 160), uib(3, 3, 1, 4, 160), mqa(4, 64, 2, 160), uib(3, 0, 1, 4, 160),
         mqa(4, 64, 2, 160), uib(3, 3, 1, 4, 160), mqa(4, 64, 2, 160), uib(3, 0, 1, 4, 160)],
        [uib(5, 5, 2, 6, 256), uib(5, 5, 1, 4, 256), *[uib(3, 5, 1, 4, 256)] * 2, uib(0, 0, 1, 2, 256),
         uib(3, 5, 1, 2, 256), uib(0, 0, 1, 2, 256), uib(0, 0, 1, 4, 256),
         mqa(4, 64, 1, 256), uib(3, 0, 1, 4, 256), mqa(4, 64, 1, 256), uib(5, 5, 1, 4, 256),
         mqa(4, 64, 1, 256), uib(5, 0, 1, 4, 256), mqa(4, 64, 1, 256), uib(5, 0, 1, 4, 256)],
    ],
)

HYBRID_LARGE = dict(
    stem=24, act="gelu", layer_scale=1e-5,
    stages=[
        [er(3, 2, 4, 48)],
        [uib(3, 5, 2, 4, 96), uib(3, 3, 1, 4, 96)],
        [uib(3, 5, 2, 4, 192), *[uib(3, 3, 1, 4, 192)] * 3, uib(3, 5, 1, 4, 192), *[uib(5, 3, 1, 4, 192)] * 2,
         mqa(8, 48, 2, 192), uib(5, 3, 1, 4, 192), mqa(8, 48, 2, 192), uib(5, 3, 1, 4, 192),
         mqa(8, 48, 2, 192), uib(5, 3, 1, 4, 192), mqa(8, 48, 2, 192), uib(3, 0, 1, 4, 192)],
        [*[uib(5, 5, 2 if i == 0 else 1, 4, 512) for i in range(4)], uib(5, 0, 1, 4, 512), uib(5, 3, 1, 4, 512),
         *[uib(5, 0, 1, 4, 512)] * 2, uib(5, 3, 1, 4, 512), uib(5, 5, 1, 4, 512),
         mqa(8, 64, 1, 512), uib(5, 0, 1, 4, 512), mqa(8, 64, 1, 512), uib(5, 0, 1, 4, 512),
         mqa(8, 64, 1, 512), uib(5, 0, 1, 4, 512), mqa(8, 64, 1, 512), uib(5, 0, 1, 4, 512)],
    ],
)


def make_divisible(value, divisor=8):
    """Round a channel count to a multiple of `divisor`, never losing more than 10% (as timm does)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


# ---------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------


def make_act(name):
    return {"relu": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU}[name]()


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


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d under a type of its own.

    Ultralytics' and YOLOv5's `initialize_weights` set eps=1e-3 on every module whose type *is*
    nn.BatchNorm2d; a checkpoint's statistics were computed with timm's eps=1e-5, so a subclass keeps them
    meaning what they meant (the detector still counts it as a norm layer: isinstance holds).
    """


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm2d followed by an activation, as one module.

    Being a BatchNorm2d itself keeps the checkpoint names equal to timm's (`bn1.weight`,
    `bn.running_mean`); `drop` and `act` are the two child slots of timm's BatchNormAct2d
    (`drop` stays an identity here, `act` is the network's activation or an identity).
    """

    def __init__(self, num_features, act=None):
        super().__init__(num_features)
        self.drop = nn.Identity()
        self.act = make_act(act) if act else nn.Identity()

    def forward(self, x):
        return self.act(self.drop(super().forward(x)))


class ConvNormAct(nn.Module):
    """Conv (no bias) + BatchNormAct2d, named `conv` and `bn` as in timm's UIB sub-layers."""

    def __init__(self, in_chs, out_chs, kernel=1, stride=1, groups=1, act=None):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = BatchNormAct2d(out_chs, act)

    folds = (("conv", "bn"),)  # (conv, norm) pairs `reparameterize` folds

    def forward(self, x):
        return self.bn(self.conv(x))


class LayerScale2d(nn.Module):
    """Learnable per-channel scale of a residual branch (initialised small, e.g. 1e-5)."""

    def __init__(self, dim, init_value=1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x):
        return x * self.gamma.view(1, -1, 1, 1)


def scale_conv(conv, gamma):
    """A new conv, with bias, that computes `gamma * conv(x)` per output channel (a layer scale folded in)."""
    scaled = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                       dilation=conv.dilation, groups=conv.groups, bias=True).to(conv.weight).requires_grad_(False)
    with torch.no_grad():
        scaled.weight.copy_(conv.weight * gamma.reshape(-1, 1, 1, 1))
        scaled.bias.copy_(conv.bias * gamma if conv.bias is not None else torch.zeros_like(gamma))
    return scaled


def absorb_affine(conv, scale, shift):
    """A new 1x1 conv, with bias, that computes `conv(scale * x + shift)` (per input channel).

    Exact only for 1x1 convs: a wider kernel would see the zero padding shifted too.
    """
    absorbed = nn.Conv2d(conv.in_channels, conv.out_channels, 1, conv.stride, bias=True)
    absorbed = absorbed.to(conv.weight).requires_grad_(False)
    with torch.no_grad():
        absorbed.weight.copy_(conv.weight * scale.reshape(1, -1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels).to(conv.weight)
        absorbed.bias.copy_(bias + conv.weight[:, :, 0, 0] @ shift)
    return absorbed


# ---------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------


class ConvBnAct(nn.Module):
    """kxk conv + BN + activation (no residual): the early stages of MobileNetV4-Conv-Small."""

    def __init__(self, in_chs, out_chs, kernel, stride, act, layer_scale=None):  # no layer scale here
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, bias=False)
        self.bn1 = BatchNormAct2d(out_chs, act)

    folds = (("conv", "bn1"),)

    def forward(self, x):
        return self.bn1(self.conv(x))


class EdgeResidual(nn.Module):
    """Fused-IB: a full (not depthwise) kxk expansion conv carrying the stride, then a 1x1 projection.

    On a high-resolution, low-width input one dense conv is faster than 1x1 + depthwise, which is
    why MobileNetV4 uses it as its first stage.
    """

    def __init__(self, in_chs, out_chs, kernel, stride, exp_ratio, act, layer_scale=None):  # no layer scale here
        super().__init__()
        mid_chs = make_divisible(in_chs * exp_ratio)
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_exp = nn.Conv2d(in_chs, mid_chs, kernel, stride, kernel // 2, bias=False)
        self.bn1 = BatchNormAct2d(mid_chs, act)
        self.conv_pwl = nn.Conv2d(mid_chs, out_chs, 1, bias=False)
        self.bn2 = BatchNormAct2d(out_chs)

    folds = (("conv_exp", "bn1"), ("conv_pwl", "bn2"))

    def forward(self, x):
        y = self.bn2(self.conv_pwl(self.bn1(self.conv_exp(x))))
        return x + y if self.has_skip else y


class UniversalInvertedResidual(nn.Module):
    """UIB: [depthwise start] -> 1x1 expansion -> [depthwise mid] -> 1x1 projection (-> layer scale).

    The stride sits on the mid depthwise conv, or on the start one when there is no mid conv. The
    start conv and the projection have no activation. Residual when resolution and width are kept.
    """

    def __init__(self, in_chs, out_chs, start_k, mid_k, stride, exp_ratio, act, layer_scale=None):
        super().__init__()
        if stride > 1 and not (start_k or mid_k):
            raise ValueError("a strided UIB needs a depthwise conv (start_k or mid_k) to carry the stride")
        mid_chs = make_divisible(in_chs * exp_ratio)
        self.has_skip = stride == 1 and in_chs == out_chs
        self.dw_start = None
        if start_k:
            self.dw_start = ConvNormAct(in_chs, in_chs, start_k, 1 if mid_k else stride, groups=in_chs)
        self.pw_exp = ConvNormAct(in_chs, mid_chs, 1, act=act)
        self.dw_mid = ConvNormAct(mid_chs, mid_chs, mid_k, stride, groups=mid_chs, act=act) if mid_k else None
        self.pw_proj = ConvNormAct(mid_chs, out_chs, 1)
        self.layer_scale = LayerScale2d(out_chs, layer_scale) if layer_scale is not None else None

    def forward(self, x):
        y = self.dw_start(x) if self.dw_start is not None else x
        y = self.pw_exp(y)
        if self.dw_mid is not None:
            y = self.dw_mid(y)
        y = self.pw_proj(y)
        if self.layer_scale is not None:
            y = self.layer_scale(y)
        return x + y if self.has_skip else y

    def fold_layer_scale(self):
        """Scale the projection's (already BN-folded) conv by the layer scale, which then goes (exact)."""
        if self.layer_scale is not None and isinstance(self.pw_proj.bn, nn.Identity):
            self.pw_proj.conv = scale_conv(self.pw_proj.conv, self.layer_scale.gamma)
            self.layer_scale = None


class MultiQueryAttention2d(nn.Module):
    """Multi-query attention on a feature map: `heads` query heads, ONE shared key head and value head.

    Keys and values can be computed on a map down-sampled by a strided depthwise conv + BN
    (`kv_stride` 2), which cuts the attention cost by 4x. Shapes come from the input at run time,
    so any height, width and batch size work.
    """

    def __init__(self, dim, dim_out, heads, key_dim, kv_stride=1, kv_kernel=3):
        super().__init__()
        self.heads, self.key_dim, self.value_dim = heads, key_dim, key_dim
        self.scale = key_dim ** -0.5
        self.query = nn.Sequential()
        self.query.add_module("proj", nn.Conv2d(dim, heads * key_dim, 1, bias=False))
        self.key = self._kv_branch(dim, key_dim, kv_stride, kv_kernel)
        self.value = self._kv_branch(dim, key_dim, kv_stride, kv_kernel)
        self.output = nn.Sequential()
        self.output.add_module("proj", nn.Conv2d(heads * key_dim, dim_out, 1, bias=False))

    @staticmethod
    def _kv_branch(dim, out_dim, stride, kernel):
        branch = nn.Sequential()
        if stride > 1:
            branch.add_module("down_conv", nn.Conv2d(dim, dim, kernel, stride, kernel // 2, groups=dim, bias=False))
            branch.add_module("norm", BatchNorm2d(dim))
        branch.add_module("proj", nn.Conv2d(dim, out_dim, 1, bias=False))
        return branch

    def fold_norms(self):
        """Fold the keys' and values' down-sampling BN into its depthwise conv (the branch's norm slot becomes
        an identity)."""
        for branch in (self.key, self.value):
            if isinstance(getattr(branch, "norm", None), nn.BatchNorm2d):
                branch.down_conv = fold_bn(branch.down_conv, branch.norm)
                branch.norm = nn.Identity()

    def forward(self, x):
        b, _, h, w = x.shape
        # contiguous (B, heads, tokens, dim) tensors: the fast attention kernels need the last dim dense
        q = self.query(x).reshape(b, self.heads, self.key_dim, h * w).transpose(-1, -2).contiguous()
        k = self.key(x).flatten(2).transpose(-1, -2).contiguous().unsqueeze(1)  # B, 1, hw', d: one head for all
        v = self.value(x).flatten(2).transpose(-1, -2).contiguous().unsqueeze(1)  # B, 1, hw', d
        if hasattr(F, "scaled_dot_product_attention"):
            o = F.scaled_dot_product_attention(q, k, v)
        else:  # torch < 2.0
            o = torch.softmax((q * self.scale) @ k.transpose(-1, -2), dim=-1) @ v
        o = o.transpose(-1, -2).reshape(b, self.heads * self.value_dim, h, w)  # heads-major channels
        return self.output(o)


class MobileAttention(nn.Module):
    """Mobile MQA block: x + layer_scale(MQA(BN(x))). No activation (`act` is accepted and unused)."""

    def __init__(self, in_chs, out_chs, heads, key_dim, kv_stride=1, kv_kernel=3, act=None, layer_scale=None):
        super().__init__()
        self.has_skip = in_chs == out_chs
        self.norm = BatchNormAct2d(in_chs)
        self.attn = MultiQueryAttention2d(in_chs, out_chs, heads, key_dim, kv_stride, kv_kernel)
        self.layer_scale = LayerScale2d(out_chs, layer_scale) if layer_scale is not None else None

    def forward(self, x):
        y = self.attn(self.norm(x))
        if self.layer_scale is not None:
            y = self.layer_scale(y)
        return x + y if self.has_skip else y

    def fold(self):
        """Fold what is exact: the layer scale into the output projection; the pre-norm (an affine map per
        channel in eval mode) into the query, key and value 1x1 projections when no strided depthwise conv
        comes first (with kv_stride 2 the depthwise conv's zero padding would see the shift: the norm stays)."""
        self.attn.fold_norms()
        if self.layer_scale is not None:
            self.attn.output.proj = scale_conv(self.attn.output.proj, self.layer_scale.gamma)
            self.layer_scale = None
        first = (self.attn.query[0], self.attn.key[0], self.attn.value[0])
        if isinstance(self.norm, nn.BatchNorm2d) and all(c.kernel_size == (1, 1) for c in first):
            scale = self.norm.weight / torch.sqrt(self.norm.running_var + self.norm.eps)
            shift = self.norm.bias - self.norm.running_mean * scale
            for branch in (self.attn.query, self.attn.key, self.attn.value):
                branch.proj = absorb_affine(branch.proj, scale, shift)
            self.norm = self.norm.act  # an identity: the attention block's norm has no activation


BLOCKS = {"cn": ConvBnAct, "er": EdgeResidual, "uib": UniversalInvertedResidual, "mqa": MobileAttention}


# ---------------------------------------------------------------------------------------------------------
# The backbones
# ---------------------------------------------------------------------------------------------------------


class MobileNetV4(nn.Module):
    """MobileNetV4 trunk built from an `arch` table: stem conv, then four stages of blocks.

    `forward(x)` returns the outputs of the four stages (strides 4, 8, 16, 32); `width_list` (and
    its alias `channel`) holds their channel counts, read from the table. The subclasses below
    fix the table; `weights` is an optional timm checkpoint path (or state dict) to load; True/False/None
    (the tutorials' `pretrained` flag) name no file, so only `default_weights` can load.
    """

    folds = (("conv_stem", "bn1"),)

    arch = None
    # A checkpoint every instance loads when no `weights` is given: `mbpatch apply --weights FILE` sets it in
    # AddModules/__init__.py, so the model yaml needs no path argument.
    default_weights = None

    def __init__(self, weights=None):
        super().__init__()
        if self.arch is None:
            raise TypeError("MobileNetV4 needs an `arch` table: use MobileNetV4ConvSmall, ... or subclass it")
        arch = self.arch
        act = arch["act"]
        self.conv_stem = nn.Conv2d(3, arch["stem"], 3, 2, 1, bias=False)
        self.bn1 = BatchNormAct2d(arch["stem"], act)
        in_chs, stages = arch["stem"], []
        for stage in arch["stages"]:
            blocks = []
            for kind, args in stage:
                blocks.append(BLOCKS[kind](in_chs, act=act, layer_scale=arch["layer_scale"], **args))
                in_chs = args["out_chs"]
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.width_list = [stage[-1][1]["out_chs"] for stage in arch["stages"]]
        self.channel = self.width_list
        self._init_weights()
        if isinstance(weights, bool):  # a tutorial yaml's `pretrained` flag, e.g. `MobileNetV4ConvSmall, [False]`
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
        for stage in self.blocks:
            x = stage(x)
            outputs.append(x)
        return outputs

    @torch.no_grad()
    def reparameterize(self):
        """Fold for deployment, in place: every conv absorbs the BatchNorm after it (which keeps only its
        activation), the hybrids' layer scales go into the projection conv before them, and the attention
        blocks' pre-norm into their 1x1 projections where that is exact (kv_stride 1). The Conv networks
        are left without any BatchNorm. Eval-mode outputs stay the same (up to float rounding); a second
        call changes nothing. The detector's own `model.fuse()` calls this once mbpatch's `fuse` recipe is
        applied.
        """
        for module in self.modules():
            fold_pairs(module, getattr(module, "folds", ()))
        for module in list(self.modules()):
            if isinstance(module, UniversalInvertedResidual):
                module.fold_layer_scale()
            elif isinstance(module, MobileAttention):
                module.fold()
        return self


class MobileNetV4ConvSmall(MobileNetV4):
    """MobileNetV4-Conv-Small (timm `mobilenetv4_conv_small`): 32, 64, 96, 128 channels."""

    arch = CONV_SMALL


class MobileNetV4ConvMedium(MobileNetV4):
    """MobileNetV4-Conv-Medium (timm `mobilenetv4_conv_medium`): 48, 80, 160, 256 channels."""

    arch = CONV_MEDIUM


class MobileNetV4ConvLarge(MobileNetV4):
    """MobileNetV4-Conv-Large (timm `mobilenetv4_conv_large`): 48, 96, 192, 512 channels."""

    arch = CONV_LARGE


class MobileNetV4HybridMedium(MobileNetV4):
    """MobileNetV4-Hybrid-Medium (timm `mobilenetv4_hybrid_medium`): 48, 80, 160, 256 channels, Mobile MQA."""

    arch = HYBRID_MEDIUM


class MobileNetV4HybridLarge(MobileNetV4):
    """MobileNetV4-Hybrid-Large (timm `mobilenetv4_hybrid_large`): 48, 96, 192, 512 channels, GELU, Mobile MQA."""

    arch = HYBRID_LARGE


mobilenetv4_small = MobileNetV4ConvSmall
mobilenetv4_medium = MobileNetV4ConvMedium
mobilenetv4_large = MobileNetV4ConvLarge
mobilenetv4_hybrid_medium = MobileNetV4HybridMedium
mobilenetv4_hybrid_large = MobileNetV4HybridLarge


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
