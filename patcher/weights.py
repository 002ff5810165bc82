"""`--weights imagenet`: timm's default ImageNet checkpoint of the chosen backbone, from the Hugging Face cache.

The catalogue records, per backbone, the Hugging Face repo of timm's default pretrained tag (`hf_hub_id`), so
neither timm nor a network look-up is needed to know WHICH file; `huggingface_hub` then fetches it into its usual
cache (`HF_HOME` / `HF_HUB_CACHE`), or finds it there when offline (`HF_HUB_OFFLINE=1` is respected: no request
is made). The file found is then checked exactly as `--weights FILE` is (safety.check_weights).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, List

from . import MbpatchError

FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub loader tries, in this order
KEYWORD = "imagenet"


def is_keyword(weights) -> bool:
    return isinstance(weights, str) and weights.strip().lower() == KEYWORD


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_imagenet(backbone) -> Dict:
    """{"repo", "revision", "file", "sha256"} of the backbone's ImageNet checkpoint in the Hugging Face cache
    (downloaded there first when online); MbpatchError (exit 2, one line) when it cannot be had."""
    repo = backbone.hf_hub_id
    if not repo:
        raise MbpatchError(f"--weights imagenet: timm publishes no pretrained weights for {backbone.id} "
                           f"(timm `{backbone.reference}`: its default tag is untrained); nothing was changed: "
                           "pass --weights FILE or leave --weights out", step="weights")
    try:
        from huggingface_hub import constants, hf_hub_download
    except ImportError:
        raise MbpatchError("--weights imagenet needs the `huggingface_hub` package (`pip install huggingface_hub`); "
                           "nothing was changed", step="weights") from None
    errors: List[str] = []
    for name in FILES:
        try:
            path = Path(hf_hub_download(repo, name))
        except Exception as e:  # noqa: BLE001 (offline, not cached, no network, no such file: said below)
            errors.append(f"{name}: {type(e).__name__}")
            continue
        # the cache keeps snapshots/<commit>/<file>: the folder is the revision the file was taken from
        return dict(repo=repo, revision=path.parent.name, file=str(path), filename=name, sha256=_sha256(path))
    offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
    raise MbpatchError(
        f"--weights imagenet: {repo} {FILES[0]} is not in the Hugging Face cache {constants.HF_HUB_CACHE} and could not "
        f"be downloaded{offline} ({'; '.join(errors)}); nothing was changed: where there is network run "
        f"`hf download {repo} {FILES[0]}` (huggingface_hub's CLI) with the same HF_HOME/HF_HUB_CACHE, or copy its "
        f"models--{repo.replace('/', '--')} folder into that cache, or pass --weights FILE",
        file=str(constants.HF_HUB_CACHE), step="weights")
