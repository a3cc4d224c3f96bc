"""The Helm chart renders the same objects as Kustomize, which is the source
of truth: the chart's default values against the base, each values-NAME.yaml
against the overlay NAME, and autoscaling.queueDepth.enabled against the
hpa-queue-depth component.

Some differences are expected and removed before comparing. Helm adds its
own labels (helm.sh/chart, app.kubernetes.io/managed-by). The chart rolls
pods on a configuration change through the checksum/config annotation, and
Kustomize does the same by appending a content hash to the configuration
ConfigMap's name. The TOML files are compared parsed, so that comments may
differ."""

import copy
import re
import tomllib

import pytest

from conftest import load_rendered

PAIRS = [
    ("helm-default", "kustomize-base"),
    ("helm-small", "kustomize-small"),
    ("helm-large", "kustomize-large"),
    ("helm-queue-depth", "kustomize-component-hpa-queue-depth"),
]

HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
CONFIG_MAP = "effnet-serve-config"
HASHED_CONFIG_MAP = re.compile(rf"^{CONFIG_MAP}-[a-z0-9]{{10}}$")


def normalize(obj: dict) -> dict:
    """Return a copy of `obj` without the expected Helm/Kustomize differences."""
    obj = copy.deepcopy(obj)
    labels = obj["metadata"].get("labels", {})
    for label in HELM_LABELS:
        labels.pop(label, None)

    if obj["kind"] == "ConfigMap":
        obj["metadata"]["name"] = HASHED_CONFIG_MAP.sub(CONFIG_MAP, obj["metadata"]["name"])
        if "config.toml" in obj["data"]:
            obj["data"]["config.toml"] = tomllib.loads(obj["data"]["config.toml"])

    if obj["kind"] == "Deployment":
        template = obj["spec"]["template"]
        annotations = template["metadata"].get("annotations", {})
        annotations.pop("checksum/config", None)
        if not annotations:
            template["metadata"].pop("annotations", None)
        for volume in template["spec"]["volumes"]:
            if "configMap" in volume:
                volume["configMap"]["name"] = HASHED_CONFIG_MAP.sub(CONFIG_MAP, volume["configMap"]["name"])
    return obj


def by_kind_and_name(objects: list[dict]) -> dict[tuple[str, str], dict]:
    normalized = [normalize(obj) for obj in objects]
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in normalized}


@pytest.mark.parametrize(("helm", "kustomize"), PAIRS)
def test_same_objects(helm, kustomize):
    helm_objects = by_kind_and_name(load_rendered(helm))
    kustomize_objects = by_kind_and_name(load_rendered(kustomize))
    assert sorted(helm_objects) == sorted(kustomize_objects)


@pytest.mark.parametrize(("helm", "kustomize"), PAIRS)
def test_same_fields(helm, kustomize):
    helm_objects = by_kind_and_name(load_rendered(helm))
    kustomize_objects = by_kind_and_name(load_rendered(kustomize))
    for key in sorted(helm_objects.keys() & kustomize_objects.keys()):
        assert helm_objects[key] == kustomize_objects[key], f"{key[0]} {key[1]} differs"
