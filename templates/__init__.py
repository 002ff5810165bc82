"""The backbone catalogue: which template file holds each backbone and the names a model yaml may use.

The template files beside this one (`mobilenetv2.py`, `mobilenetv4.py`, `repvit.py`) are copied verbatim
into the user's checkout; they import only torch. This table is the only place that says which names each
file exports, so the recipes that register a backbone never have to read the template source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

TEMPLATE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Backbone:
    id: str  # the catalogue id, what `--backbone` takes
    family: str  # template file stem
    cls: str  # the class the template defines for this network
    aliases: Tuple[str, ...]  # other names the tutorials' yaml files use for the same network
    channels: Tuple[int, int, int, int]  # output channels at strides 4, 8, 16, 32
    reference: str  # timm model of the same network (parameter count and weights are checked against it)
    # `--weights imagenet`: the Hugging Face repo of timm's default pretrained tag for `reference`, as
    # `timm.models.get_pretrained_cfg(reference).hf_hub_id` gave it (timm 1.0.31); None: timm publishes none
    hf_hub_id: Optional[str] = None

    @property
    def names(self) -> Tuple[str, ...]:
        """Every name a yaml file may use for this backbone, class name first."""
        seen = []
        for name in (self.cls, self.id, *self.aliases):
            if name not in seen:
                seen.append(name)
        return tuple(seen)

    @property
    def template(self) -> Path:
        return TEMPLATE_DIR / f"{self.family}.py"

    def source(self) -> str:
        return self.template.read_text(encoding="utf-8")


def _bb(id, family, cls, channels, reference=None, aliases=()):
    reference = reference or id
    return Backbone(id, family, cls, tuple(aliases), tuple(channels), reference, IMAGENET.get(reference))


# timm reference -> the Hugging Face repo of timm's default pretrained tag (data: timm is not needed at run time)
IMAGENET: Dict[str, str] = {
    "mobilenetv2_100": "timm/mobilenetv2_100.ra_in1k",
    "mobilenetv2_050": "timm/mobilenetv2_050.lamb_in1k",  # mobilenetv2_075's default tag is `untrained`: none
    "mobilenetv4_conv_small": "timm/mobilenetv4_conv_small.e2400_r224_in1k",
    "mobilenetv4_conv_medium": "timm/mobilenetv4_conv_medium.e500_r256_in1k",
    "mobilenetv4_conv_large": "timm/mobilenetv4_conv_large.e600_r384_in1k",
    "mobilenetv4_hybrid_medium": "timm/mobilenetv4_hybrid_medium.e200_r256_in12k_ft_in1k",
    "mobilenetv4_hybrid_large": "timm/mobilenetv4_hybrid_large.ix_e600_r384_in1k",
    "repvit_m1": "timm/repvit_m1.dist_in1k",
    "repvit_m2": "timm/repvit_m2.dist_in1k",
    "repvit_m3": "timm/repvit_m3.dist_in1k",
    "repvit_m0_9": "timm/repvit_m0_9.dist_300e_in1k",
    "repvit_m1_0": "timm/repvit_m1_0.dist_300e_in1k",
    "repvit_m1_1": "timm/repvit_m1_1.dist_300e_in1k",
    "repvit_m1_5": "timm/repvit_m1_5.dist_300e_in1k",
    "repvit_m2_3": "timm/repvit_m2_3.dist_300e_in1k",
}


# id, template, class, (s4, s8, s16, s32) channels, timm reference, tutorial aliases
CATALOG: Dict[str, Backbone] = {
    b.id: b
    for b in (
        _bb("mobilenetv2", "mobilenetv2", "MobileNetV2", (24, 32, 96, 320), "mobilenetv2_100"),
        _bb("mobilenetv2_075", "mobilenetv2", "MobileNetV2_075", (24, 24, 72, 240)),
        _bb("mobilenetv2_050", "mobilenetv2", "MobileNetV2_050", (16, 16, 48, 160)),
        # SSDLite's wide taps of the same networks (same timm weights, plus timm's final 1x1 conv to 1280)
        _bb("mobilenetv2_wide", "mobilenetv2", "MobileNetV2Wide", (144, 192, 576, 1280), "mobilenetv2_100"),
        _bb("mobilenetv2_075_wide", "mobilenetv2", "MobileNetV2_075_Wide", (144, 144, 432, 1280), "mobilenetv2_075"),
        _bb("mobilenetv2_050_wide", "mobilenetv2", "MobileNetV2_050_Wide", (96, 96, 288, 1280), "mobilenetv2_050"),
        _bb("mobilenetv4_small", "mobilenetv4", "MobileNetV4ConvSmall", (32, 64, 96, 128), "mobilenetv4_conv_small"),
        _bb("mobilenetv4_medium", "mobilenetv4", "MobileNetV4ConvMedium", (48, 80, 160, 256), "mobilenetv4_conv_medium"),
        _bb("mobilenetv4_large", "mobilenetv4", "MobileNetV4ConvLarge", (48, 96, 192, 512), "mobilenetv4_conv_large"),
        _bb("mobilenetv4_hybrid_medium", "mobilenetv4", "MobileNetV4HybridMedium", (48, 80, 160, 256)),
        _bb("mobilenetv4_hybrid_large", "mobilenetv4", "MobileNetV4HybridLarge", (48, 96, 192, 512)),
        _bb("repvit_m1", "repvit", "RepViTM1", (48, 96, 192, 384)),
        _bb("repvit_m2", "repvit", "RepViTM2", (64, 128, 256, 512)),
        _bb("repvit_m3", "repvit", "RepViTM3", (64, 128, 256, 512)),
        _bb("repvit_m0_9", "repvit", "RepViTM0_9", (48, 96, 192, 384)),
        _bb("repvit_m1_0", "repvit", "RepViTM1_0", (56, 112, 224, 448)),
        _bb("repvit_m1_1", "repvit", "RepViTM1_1", (64, 128, 256, 512)),
        _bb("repvit_m1_5", "repvit", "RepViTM1_5", (64, 128, 256, 512)),
        _bb("repvit_m2_3", "repvit", "RepViTM2_3", (80, 160, 320, 640)),
    )
}

# Backbones whose template exists in this release of mbpatch (the others are listed but refused).
AVAILABLE = {b for b in CATALOG if CATALOG[b].template.exists()}


def lookup(name: str) -> Optional[Backbone]:
    """Find a backbone by id, class name or tutorial alias, case-insensitively."""
    key = name.strip().lower().replace("-", "_")
    for backbone in CATALOG.values():
        if key in (n.lower() for n in backbone.names):
            return backbone
    return None
