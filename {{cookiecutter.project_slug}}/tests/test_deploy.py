"""The Kubernetes manifests (deploy/k8s) agree with the service: every container has its
resources, probes and a restricted security context; every setting they pass exists; image,
port, commands and health checks are those of the Dockerfile and the compose file. (The
template's own tests also validate them against Kubernetes' and KEDA's schemas.)"""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from {{ cookiecutter.__package_name }}.infrastructure.task_keys import leases_key
from {{ cookiecutter.__package_name }}.settings import Settings

SLUG = "{{ cookiecutter.project_slug }}"
PROJECT = Path(__file__).resolve().parent.parent
K8S = PROJECT / "deploy" / "k8s"
KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())
COMPOSE = yaml.safe_load((PROJECT / "docker-compose.yml").read_text())
Manifest = dict[str, Any]


def manifests() -> list[Manifest]:
    return [
        document
        for name in KUSTOMIZATION["resources"]
        for document in yaml.safe_load_all((K8S / name).read_text())
    ]


def of_kind(kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests() if m["kind"] == kind}


def pods() -> dict[str, Manifest]:
    """The pod specs of the Deployments and Jobs, by their owner's name."""
    owners = {**of_kind("Deployment"), **of_kind("Job")}
    return {name: owner["spec"]["template"]["spec"] for name, owner in owners.items()}


def literals_of(kustomization: dict[str, Any]) -> list[str]:
    return [
        literal
        for generator in kustomization["configMapGenerator"]
        for literal in generator["literals"]
    ]


def env_file_names(path: Path) -> set[str]:
    lines = path.read_text().splitlines()
    return {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}


def test_kustomization_lists_every_manifest() -> None:
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(KUSTOMIZATION["resources"]) == on_disk


@pytest.mark.parametrize("name", sorted(pods()))
def test_every_container_has_resources_probes_and_a_restricted_context(name: str) -> None:
    pod = pods()[name]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        if name.endswith("-migrate"):
            continue  # a Job that runs once: nothing to probe
        assert "livenessProbe" in container
        if name.endswith("-api"):
            assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
            assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"


def test_every_setting_passed_exists() -> None:
    """ConfigMap literals and the Secret's keys become environment variables of the pods: each
    is a setting, and the literals' values are ones the settings accept."""
    fields = {name.upper() for name in Settings.model_fields}
    literals = {literal.split("=", 1)[0] for literal in literals_of(KUSTOMIZATION)}
    secret = env_file_names(K8S / "secrets.env.example")
    assert literals | secret <= fields, (literals | secret) - fields
    values = dict(literal.split("=", 1) for literal in literals_of(KUSTOMIZATION))
    Settings.model_validate({name.lower(): value for name, value in values.items()})


def test_image_port_commands_and_checks_agree_with_dockerfile_and_compose() -> None:
    [image] = KUSTOMIZATION["images"]
    services = COMPOSE["services"]
    assert services["api"]["image"].split(":")[0] == image["name"]
    dockerfile = (PROJECT / "Dockerfile").read_text()
    [exposed] = re.findall(r"^EXPOSE (\d+)$", dockerfile, re.MULTILINE)
    assert services["api"]["ports"][0].endswith(f":{exposed}")
    deployments = of_kind("Deployment")
    for pod in pods().values():
        for container in pod["containers"]:
            assert container["image"] == image["name"]
    wait_s = Settings(_env_file=None).worker_job_completion_wait_s
    [api] = deployments[f"{SLUG}-api"]["spec"]["template"]["spec"]["containers"]
    assert [port["containerPort"] for port in api["ports"]] == [int(exposed)]
    for service in ("worker", "worker-slow"):
        pod = deployments[f"{SLUG}-{service}"]["spec"]["template"]["spec"]
        [worker] = pod["containers"]
        assert worker["command"] == services[service]["command"]
        health_check = services[service]["healthcheck"]["test"][1:]
        assert worker["livenessProbe"]["exec"]["command"] == health_check
        assert pod["terminationGracePeriodSeconds"] > wait_s


def test_keda_scales_each_worker_on_its_own_queue() -> None:
    settings = Settings(_env_file=None)
    scaled = of_kind("ScaledObject")
    queues = {"worker": settings.task_queue, "worker-slow": settings.slow_task_queue}
    for service, queue in queues.items():
        name = f"{SLUG}-{service}"
        assert scaled[name]["spec"]["scaleTargetRef"]["name"] == name
        waiting, running = scaled[name]["spec"]["triggers"]
        assert waiting["metadata"]["listName"] == queue
        assert running["metadata"]["listName"] == leases_key(queue)
        assert running["metadata"]["listLength"] == str(settings.worker_max_jobs)
        for trigger in (waiting, running):
            assert trigger["metadata"]["databaseIndex"] == str(settings.redis_queue_db)
    assert scaled[f"{SLUG}-worker"]["spec"]["minReplicaCount"] >= 1  # it runs the cron jobs
