"""The rendered Kubernetes manifests (deploy/k8s) are valid, checked offline: Kubernetes' own
kinds against the schemas the kubernetes-validate package bundles, KEDA's against its CRD
schemas (tests/schemas). No cluster is needed; the project's own tests/test_deploy.py checks
that they agree with the service."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from conftest import ROOT, Combo, combo_params

KUBERNETES = "1.33"  # the oldest minor version the manifests are checked against
KEDA_SCHEMAS = {
    "ScaledObject": ROOT / "tests/schemas/keda-scaledobject.json",
    "TriggerAuthentication": ROOT / "tests/schemas/keda-triggerauthentication.json",
}


def renders_manifests(combo: Combo) -> bool:
    """The manifests differ by the examples and the database only."""
    return (
        combo.has_tasks
        and combo.python_version == "3.11"
        and combo.cache_backend == "redis"
        and combo.ci == "github"
    )


def documents(folder: Path) -> Iterator[dict[str, Any]]:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        yield from yaml.safe_load_all((folder / name).read_text())


def validate(document: dict[str, Any]) -> None:
    """Raise when `document` is not a valid object of its kind."""
    schema = KEDA_SCHEMAS.get(document["kind"])
    if schema is not None:
        jsonschema.validate(document, json.loads(schema.read_text()))
    else:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


@pytest.mark.parametrize("combo", combo_params(select=renders_manifests))
def test_the_manifests_are_valid_kubernetes_and_keda_objects(
    combo: Combo, bake: Callable[[Combo], Path]
) -> None:
    kinds = []
    for document in documents(bake(combo) / "deploy/k8s"):
        validate(document)
        kinds.append(document["kind"])
    assert kinds.count("Deployment") == 3  # the API, one worker per queue
    assert kinds.count("ScaledObject") == 2
    assert {"Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"} <= set(
        kinds
    )
    assert ("Job" in kinds) is combo.has_database
    assert ("PersistentVolumeClaim" in kinds) is (combo.example_tasks == "yes")


@pytest.mark.parametrize(
    ("kind", "spoil"),
    [
        ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name")),
        ("Deployment", lambda d: d["spec"].update(replicas="two")),
        ("ScaledObject", lambda d: d["spec"].pop("scaleTargetRef")),
        ("TriggerAuthentication", lambda d: d["spec"]["secretTargetRef"][0].pop("key")),
    ],
)
def test_the_validation_refuses_a_spoiled_manifest(
    kind: str, spoil: Callable[[dict[str, Any]], object], bake: Callable[[Combo], Path]
) -> None:
    """The schemas bite: each spoiled copy of a valid object is refused."""
    [combo] = [param.values[0] for param in combo_params(select=renders_manifests)][:1]
    original = next(d for d in documents(bake(combo) / "deploy/k8s") if d["kind"] == kind)
    spoiled = copy.deepcopy(original)
    spoil(spoiled)
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate(spoiled)
