"""Tools for development, not part of the running service: the embedded server that `just dev`
and the tests start, `just dev` itself and `just bench`. They use the dev dependencies, and the
service's wheel (and so its image) leaves this package out."""
