"""The ``avsl-edge`` console script: :func:`avsl_edge.cli.main`, with Ctrl-C during its start-up
imports (numpy, OpenCV, ONNX Runtime: a second or more) handled like Ctrl-C during a command:
one line, exit code 130, no traceback. Standard library only until the CLI is imported."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    try:
        from .cli import main as cli_main  # noqa: PLC0415 - the slow imports, inside the handler
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
