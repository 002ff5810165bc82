"""MobileNetV2 inverted-residual block as an ordinary YOLOv5 layer (the "per-block" tutorial style).

Paper: "MobileNetV2: Inverted Residuals and Linear Bottlenecks", Sandler et al., CVPR 2018
(arXiv 1801.04381), Table 1 and Figure 4: a 1x1 expansion conv to `t * c1` channels (left out when
t = 1), a 3x3 depthwise conv with the stride, then a 1x1 *linear* projection to `c2` channels; the input
is added back when the stride is 1 and the channel count is kept. Every conv is followed by BatchNorm;
the expansion and the depthwise conv by ReLU6, the projection by nothing (an identity).

In a YOLOv5 model yaml a row `[-1, n, InvertedResidual, [c2, s, t]]` builds
`InvertedResidual(c1, c2, s, t)`: parse_model passes the input channels first, and, because mbpatch
registers the class in parse_model's channel-scaled module set, `c2` is multiplied by `width_multiple`
like a `Conv` row (and `n` by `depth_multiple`).

Why not YOLOv5's own `Conv`: its `act` argument takes True (SiLU), False or an `nn.Module`; any other
value, such as the string 'ReLU', silently gives *no* activation at all. This block spells its
activations out. Only torch is needed.
"""

import torch
import torch.nn as nn

__all__ = ["InvertedResidual"]


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation; `act=None` is the linear projection (identity)."""

    def __init__(self, c1, c2, k=1, s=1, groups=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def fold_bn(self):
        """Fold the BatchNorm into the conv (eval-mode statistics); the norm slot becomes an identity."""
        bn, conv = self.bn, self.conv
        if not isinstance(bn, nn.BatchNorm2d):
            return
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          groups=conv.groups, bias=True).to(conv.weight).requires_grad_(False)
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        self.conv, self.bn = fused, nn.Identity()


class InvertedResidual(nn.Module):
    """MobileNetV2 block: (c1 -> t*c1 expand, ReLU6) -> (3x3 depthwise, stride s, ReLU6) -> (t*c1 -> c2 linear)."""

    def __init__(self, c1, c2, s=1, t=6):
        super().__init__()
        if s not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {s}")
        hidden = int(round(c1 * t))
        layers = []
        if t != 1:
            layers.append(ConvBNAct(c1, hidden, 1))  # expansion
        layers += [
            ConvBNAct(hidden, hidden, 3, s, groups=hidden),  # depthwise
            ConvBNAct(hidden, c2, 1, act=False),  # linear bottleneck
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = s == 1 and c1 == c2

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)

    @torch.no_grad()
    def reparameterize(self):
        """Fold for deployment, in place: each conv absorbs its BatchNorm. Eval-mode outputs stay the same (up
        to float rounding); a second call changes nothing. YOLOv5's own `model.fuse()` calls this once
        mbpatch's `fuse` recipe is applied."""
        for layer in self.conv:
            layer.fold_bn()
        return self
