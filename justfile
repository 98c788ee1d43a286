# Maintainer commands of the template. Run them through `python3 scripts/just.py <recipe>`,
# which installs the pinned tools first; `just <recipe>` works inside the activated .venv.

set positional-arguments

# List the recipes
default:
    @just --list

# Lint the template's code, then render every option combination and run each project's own
# checks and tests, in parallel (extra arguments go to pytest)
test *args: lint
    python -m pytest -n auto --dist loadgroup --durations=15 "$@"

# Render the default service, start it on an embedded Redis and show it answering over HTTP
demo *args:
    python scripts/demo.py "$@"

# Lint and type-check the template's own code (hooks, scripts, tests)
lint:
    ruff check .
    ruff format --check .
    mypy

# Remake the console's screenshots in the rendered docs (docs/images) from a run in Chromium
screenshots:
    python scripts/console_screenshots.py
