"""Where the checkout is, and the directory under it that holds what the stack starts."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Private servers, their logs and what scripts/run started (ignored by git).
RUN = ROOT / ".run"


def rel(path: Path) -> str:
    """`path` relative to the checkout when it lies inside it (for messages)."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)
