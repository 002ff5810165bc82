"""`python -m mbpatch` and the `mbpatch` command: signal handling first, then the CLI (see stop.py)."""

import sys

from .stop import install


def run() -> None:
    install()  # before the imports below (~0.2 s): a Ctrl-C there ends with one line too
    try:
        from .cli import main

        main(prog_name="mbpatch")
    except KeyboardInterrupt as e:  # interrupted before a command took over (imports, option parsing)
        signum = int(getattr(e, "signum", 2))
        sys.stderr.write(f"mbpatch: interrupted ({getattr(e, 'name', 'SIGINT')}) before it started: nothing was changed\n")
        sys.exit(128 + signum)


if __name__ == "__main__":
    run()
