"""Invariants of every rendered manifest set (Kustomize base, overlays,
components and the Helm chart), checked against the server's sources.

Probe paths are routes of the HTTP router, and ports are the ones the flags
open. The grace period covers the shutdown sequence, and thread counts
follow the CPU limit."""

import math
import re
import tomllib

import pytest

from conftest import DEPLOY, REPOSITORY, find, load_rendered, only, rendered_names

SERVER_SOURCE = REPOSITORY / "crates" / "server" / "src"

# Server defaults of the shutdown timing (config.rs), used when the
# Deployment does not set the environment variables.
DEFAULT_DRAIN_PERIOD_MS = 5000
DEFAULT_SHUTDOWN_TIMEOUT_MS = 20000


def http_routes() -> set[str]:
    """Return every path registered with `.route("…")` in the HTTP modules."""
    routes = set()
    for path in (SERVER_SOURCE / "http").rglob("*.rs"):
        routes.update(re.findall(r'\.route\(\s*"([^"]+)"', path.read_text()))
    return routes


def struct_fields(source: str, struct: str) -> set[str]:
    """Return the field names of one Rust struct in `source`."""
    match = re.search(rf"pub struct {struct} \{{(.*?)\n\}}", source, re.DOTALL)
    assert match, f"struct {struct} not found"
    return set(re.findall(r"pub (\w+):", match.group(1)))


def serve_flags() -> set[str]:
    """Return the long flags of `effnet-serve serve` (clap derives them from
    the fields of ServeArgs)."""
    source = (SERVER_SOURCE / "config.rs").read_text()
    return {"--" + name.replace("_", "-") for name in struct_fields(source, "ServeArgs")}


def serve_env_vars() -> set[str]:
    source = (SERVER_SOURCE / "config.rs").read_text()
    return set(re.findall(r'env = "(\w+)"', source))


def service(objects: list[dict], name: str = "effnet-serve") -> dict:
    return next(s for s in find(objects, "Service") if s["metadata"]["name"] == name)


def server_container(objects: list[dict]) -> dict:
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "effnet-serve")


def env_value(container: dict, name: str) -> dict | None:
    return next((e for e in container.get("env", []) if e["name"] == name), None)


def flag_values(container: dict) -> dict[str, str]:
    values = {}
    for arg in container["args"]:
        if arg.startswith("--"):
            flag, _, value = arg.partition("=")
            values[flag] = value
    return values


def cpu_cores(quantity: str) -> float:
    if quantity.endswith("m"):
        return int(quantity[:-1]) / 1000
    return float(quantity)


MANIFESTS = [name for name in rendered_names() if "Deployment" in {o["kind"] for o in load_rendered(name)}]


@pytest.fixture(params=MANIFESTS)
def objects(request) -> list[dict]:
    return load_rendered(request.param)


def test_manifests_rendered():
    assert "kustomize-base" in MANIFESTS
    assert "helm-default" in MANIFESTS


def test_probe_paths_are_routes(objects):
    routes = http_routes()
    container = server_container(objects)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert path in routes, f"{probe} path {path} is not a route of crates/server/src/http"


def test_probe_endpoints(objects):
    container = server_container(objects)
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/ready"


def test_liveness_tolerates_busy_server(objects):
    probe = server_container(objects)["livenessProbe"]
    assert probe["timeoutSeconds"] >= 5
    assert probe["failureThreshold"] * probe["periodSeconds"] >= 60


def test_startup_probe_covers_model_loading(objects):
    probe = server_container(objects)["startupProbe"]
    # Six models loaded and warmed up in 6 s with a 2-core quota; the
    # margin is for slower nodes and the larger lite3 and lite4.
    assert probe["failureThreshold"] * probe["periodSeconds"] >= 180


def test_grace_period_covers_shutdown(objects):
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    container = server_container(objects)
    drain = env_value(container, "EFFNET_DRAIN_PERIOD_MS")
    timeout = env_value(container, "EFFNET_SHUTDOWN_TIMEOUT_MS")
    drain_ms = int(drain["value"]) if drain else DEFAULT_DRAIN_PERIOD_MS
    timeout_ms = int(timeout["value"]) if timeout else DEFAULT_SHUTDOWN_TIMEOUT_MS
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    needed = pre_stop + math.ceil((drain_ms + timeout_ms) / 1000)
    assert pod["terminationGracePeriodSeconds"] > needed


def test_flags_exist(objects):
    container = server_container(objects)
    assert container["args"][0] == "serve"
    known = serve_flags()
    for flag in flag_values(container):
        assert flag in known, f"{flag} is not a flag of effnet-serve serve"


def test_env_vars_exist(objects):
    known = serve_env_vars()
    for env in server_container(objects).get("env", []):
        assert env["name"] in known, f"{env['name']} is read by no flag of effnet-serve serve"


def test_container_ports_match_flags(objects):
    container = server_container(objects)
    flags = flag_values(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert set(ports) == {"http", "grpc"}
    assert int(flags["--http-addr"].rsplit(":", 1)[1]) == ports["http"]
    assert int(flags["--grpc-addr"].rsplit(":", 1)[1]) == ports["grpc"]


def test_service_ports_match_container(objects):
    container = server_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    by_name = {p["name"]: p for p in service(objects)["spec"]["ports"]}
    assert by_name["http"]["port"] == ports["http"]
    assert by_name["grpc"]["port"] == ports["grpc"]
    assert by_name["http"]["appProtocol"] == "http"
    assert by_name["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    for svc in find(objects, "Service"):
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {svc['metadata']['name']} targets no container port"


def test_headless_service_grpc(objects):
    headless = service(objects, "effnet-serve-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert [p["name"] for p in headless["spec"]["ports"]] == ["grpc"]


def test_service_monitor_port(objects):
    service_ports = {p["name"] for p in service(objects)["spec"]["ports"]}
    routes = http_routes()
    for monitor in find(objects, "ServiceMonitor"):
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in service_ports
            assert endpoint["path"] in routes


def test_autoscaler_metrics_exist(objects):
    exposed = set(re.findall(r'"(effnet_\w+)"', (SERVER_SOURCE / "metrics" / "mod.rs").read_text()))
    for metric in only(objects, "HorizontalPodAutoscaler")["spec"]["metrics"]:
        if metric["type"] == "Pods":
            name = metric["pods"]["metric"]["name"]
            assert name in exposed, f"the server exposes no metric {name}"


def test_network_policy_ports(objects):
    container_ports = {p["name"] for p in server_container(objects)["ports"]}
    policy = only(objects, "NetworkPolicy")
    allowed = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
    assert allowed == container_ports


def test_selectors_match_pods(objects):
    deployment = only(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        *(svc["spec"]["selector"] for svc in find(objects, "Service")),
        only(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        only(objects, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()


def test_autoscaler_targets_deployment(objects):
    deployment = only(objects, "Deployment")
    target = only(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment"
    assert target["name"] == deployment["metadata"]["name"]


def test_threads_follow_cpu_limit(objects):
    container = server_container(objects)
    for name in ("EFFNET_INTRA_OP_THREADS", "EFFNET_DECODE_WORKERS"):
        env = env_value(container, name)
        assert env is not None, f"{name} not set"
        field = env["valueFrom"]["resourceFieldRef"]
        assert field["resource"] == "limits.cpu"
        assert field["containerName"] == container["name"]
        assert str(field["divisor"]) == "1"


def test_cpu_limit_whole_cores(objects):
    resources = server_container(objects)["resources"]
    limit = cpu_cores(str(resources["limits"]["cpu"]))
    assert limit == int(limit), f"CPU limit {limit} is not whole cores; the threads round it up"
    assert resources["requests"] == resources["limits"]


def test_rollout_keeps_capacity(objects):
    strategy = only(objects, "Deployment")["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] >= 1


def test_security_context(objects):
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    container = server_container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_run_as_image_user(objects):
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    assert user, "deploy/Dockerfile has no numeric USER uid:gid"
    context = only(objects, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert context["runAsUser"] == int(user.group(1))
    assert context["runAsGroup"] == int(user.group(2))


def test_config_file_keys(objects):
    source = (SERVER_SOURCE / "config.rs").read_text()
    tables = {
        "server": struct_fields(source, "FileServer"),
        "limits": struct_fields(source, "FileLimits"),
    }
    model_keys = struct_fields(source, "ModelSettings")
    config_map = next(c for c in find(objects, "ConfigMap") if "config.toml" in c.get("data", {}))
    config = tomllib.loads(config_map["data"]["config.toml"])
    for table, keys in config.items():
        if table == "models":
            for model, settings in keys.items():
                assert set(settings) <= model_keys, f"unknown keys in [models.{model}]"
        else:
            assert set(keys) <= tables[table], f"unknown keys in [{table}]"


def test_config_mounted(objects):
    container = server_container(objects)
    flags = flag_values(container)
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert flags["--config"] == "/etc/effnet-serve/config.toml"
    assert "/etc/effnet-serve" in mounts
