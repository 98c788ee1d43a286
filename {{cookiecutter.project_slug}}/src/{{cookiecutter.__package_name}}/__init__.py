"""The {{ cookiecutter.project_name }} service.

Its version and one-line summary come from the installed distribution's metadata.
"""

from importlib.metadata import metadata

_METADATA = metadata("{{ cookiecutter.project_slug }}")
__version__ = _METADATA["Version"]
__summary__ = _METADATA["Summary"]
