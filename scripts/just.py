#!/usr/bin/env python3
"""Run a maintainer recipe with the template's pinned tools: `python3 scripts/just.py test`.

Needs only Python >= 3.11 and pip. On first use (and whenever requirements.txt changes) it
creates `.venv` in the repository and installs the tools there (cookiecutter, uv, just, pytest,
linters); then it runs `just <arguments>` with that environment first on PATH.
"""

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
REQUIREMENTS = ROOT / "requirements.txt"
STAMP = VENV / "requirements.sha256"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def ensure_tools() -> None:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    if not (BIN / "python").exists() and not (BIN / "python.exe").exists():
        print(f"Creating {VENV.relative_to(ROOT)} for the template's tools...", flush=True)
        venv.create(VENV, with_pip=True)
    print("Installing the pinned tools from requirements.txt (first run only)...", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    STAMP.write_text(digest)


def main() -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - say so clearly on an older Python
        print("Python 3.11 or newer is needed to run the template's tools.", file=sys.stderr)
        return 1
    ensure_tools()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["VIRTUAL_ENV"] = str(VENV)
    just = BIN / ("just.exe" if os.name == "nt" else "just")
    return subprocess.call([str(just), *sys.argv[1:]], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
