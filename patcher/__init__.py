"""mbpatch: swap the backbone of an Ultralytics or YOLOv5 checkout, verify it builds, and revert it."""

__version__ = "0.1.0"


class MbpatchError(Exception):
    """A refusal or bad input: the message names the file, the step and what to do. Exit code 2."""

    exit_code = 2

    def __init__(self, message: str, *, file: str = "", step: str = ""):
        self.file = file
        self.step = step
        super().__init__(message)

    def line(self) -> str:
        where = " ".join(p for p in (self.file and f"{self.file}:", self.step and f"[{self.step}]") if p)
        return f"{where} {self}" if where else str(self)
