"""Helpers of the deployment tests: the manifests that deploy/check.sh
rendered into DEPLOY_RENDER_DIR, and the server sources they must agree
with."""

import functools
import os
import pathlib

import pytest
import yaml

DEPLOY = pathlib.Path(__file__).resolve().parents[1]
REPOSITORY = DEPLOY.parent
RENDER_DIR = pathlib.Path(os.environ.get("DEPLOY_RENDER_DIR", DEPLOY / ".tools" / "render"))


@functools.cache
def load_rendered(name: str) -> list[dict]:
    """Return the objects of one rendered file, such as `kustomize-base`.
    Cached: callers must not modify them."""
    path = RENDER_DIR / f"{name}.yaml"
    if not path.is_file():
        pytest.fail(f"{path} not found; run deploy/check.sh, which renders it")
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def rendered_names() -> list[str]:
    """Return the names of every rendered file, sorted."""
    return sorted(path.stem for path in RENDER_DIR.glob("*.yaml"))


def find(objects: list[dict], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def only(objects: list[dict], kind: str) -> dict:
    matches = find(objects, kind)
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]
