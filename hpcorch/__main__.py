"""`python -m hpcorch` is the same as the `hpcorch` console script."""

from __future__ import annotations

from hpcorch.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
