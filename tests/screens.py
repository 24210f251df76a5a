"""Where screenshot tests save their pictures.

``make screenshots`` (CAMPAIGN_SCREENSHOTS=1) refreshes the ones in docs/screenshots/ that the
README and the docs show; an ordinary test run saves to build/screenshots/ so it leaves the
working tree as it found it.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def screenshot_dir(kind: str) -> Path:
    base = ROOT / "docs" if os.environ.get("CAMPAIGN_SCREENSHOTS") == "1" else ROOT / "build"
    path = base / "screenshots" / kind
    path.mkdir(parents=True, exist_ok=True)
    return path
