"""``python -m pytest_repoclones``: the same as the ``pytest-repoclones`` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
