# Stand-in for ghcr.io/astral-sh/uv: the uv binary of the PyPI wheel, at /uv as there.
FROM scratch
COPY uv/bin/uv /uv
