"""The yaml path mbpatch prints or hands the checkout's loader, chosen so Ultralytics' scale regex cannot corrupt it.

Ultralytics' `yaml_model_load` strips the scale letter with `re.sub(r"(\\d+)([nslmx])(.+)?$", r"\\1\\3", path)` over
the WHOLE path, so a folder like `exp2s/`, `v8m/` or a temp folder `tmp.AB5lX` loses a letter and the file is not
found. The checkout's `check_yaml` also finds a yaml by its bare name under its own package folder, so where the
folders could match, the bare name is the path to hand over (it survives: the regex then only sees the name).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Union

SCALE_REGEX = re.compile(r"(\d+)([nslmx])(.+)?$")  # as Ultralytics' yaml_model_load applies it


def survives_scale_regex(path: Union[str, Path]) -> bool:
    """True when the regex's only possible match is inside the file name (no folder has a digit + n/s/l/m/x)."""
    text = str(path)
    name = Path(text).name
    m = SCALE_REGEX.search(text)
    return m is None or m.start() >= len(text) - len(name)


def loadable(path: Union[str, Path], package_dir: Union[str, Path, None] = None) -> str:
    """`path` itself when it survives the scale regex; otherwise its bare name, which the checkout's `check_yaml`
    finds under `package_dir` (the yaml files mbpatch writes all live there)."""
    path = Path(path)
    if survives_scale_regex(path):
        return str(path)
    if package_dir is not None:
        try:
            path.relative_to(Path(package_dir))
        except ValueError:  # not under the package: the name would not be found, the path is the best there is
            return str(path)
    return path.name
