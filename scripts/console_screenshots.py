#!/usr/bin/env python3
"""Remake the console's screenshots in the rendered docs from a real run:
`python3 scripts/just.py screenshots`.

It runs the console's browser test (tests/test_console_browser.py: the default service rendered,
started with `just dev`, driven in Debian's Chromium), which saves a picture of each page it
visits into the folder CONSOLE_SCREENSHOTS names: here the template's docs/images, which
docs/console.md shows.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "{{cookiecutter.project_slug}}" / "docs" / "images"
COMBO = "python_version=3.11,cache_backend=redis,example_tasks=yes,database=none,ci=github"


def main() -> int:
    env = {**os.environ, "CONSOLE_SCREENSHOTS": str(IMAGES), "TEMPLATE_COMBOS": COMBO}
    test = ["-m", "pytest", "-q", "tests/test_console_browser.py"]
    code = subprocess.call([sys.executable, *test], cwd=ROOT, env=env)
    if code == 0:
        for picture in sorted(IMAGES.glob("console-*.png")):
            print(f"{picture.relative_to(ROOT)}: {picture.stat().st_size // 1024} KiB")
    return code


if __name__ == "__main__":
    sys.exit(main())
