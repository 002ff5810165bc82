"""`mbpatch doctor`: the checkout's state, per-recipe state, the journal, and the environment (SPEC §9)."""

from __future__ import annotations

from . import report
from .checkout import detect
from .journal import Journal


def run_doctor(repo: str, python, as_json: bool) -> int:
    co = detect(repo)
    journal = Journal(co.root)
    doc = dict(kind=co.kind, version=co.version, layout=co.layout, root=str(co.root), files=co.files,
               journal=len(journal.entries()) if journal.exists() else 0)
    if as_json:
        report.dump(doc)
    else:
        for k, v in doc.items():
            report.console.print(f"{k}: {v}")
    return 0
