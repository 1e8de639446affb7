#!/usr/bin/env python3
"""Helpers for scripts/validate-deploy (run with the venv's Python: PyYAML).

    render DIR                  kustomize build DIR without kustomize
    same KUSTOMIZE FALLBACK     the two renderings hold the same objects
    policy RENDERED CONFIG COLLECTOR
                                what the schema cannot see: the manifests
                                agree with the sidecar's config file and keep
                                the hardening the README promises
    otel CONFIG                 every pipeline names defined components

Each prints what it checked and exits 1 with one line per problem.
"""

import re
import sys
import tomllib
from pathlib import Path, PurePosixPath

import yaml

# The fallback renders only what our kustomizations use; anything else is an
# error rather than silently dropped (a patch left out would validate the
# wrong manifests).
SUPPORTED = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator"}


def load_all(text):
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(directory):
    """The objects `kustomize build DIR` makes, without hash suffixes."""
    directory = Path(directory)
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        sys.exit(f"{directory}/kustomization.yaml: the fallback renderer does not support {sorted(unknown)}; "
                 "install kubectl (it has kustomize built in)")
    objects = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        objects += render(path) if path.is_dir() else load_all(path.read_text())
    for generator in kustomization.get("configMapGenerator", []):
        data = {}
        for entry in generator.get("files", []):
            key, _, file = entry.rpartition("=") if "=" in entry else (Path(entry).name, "", entry)
            data[key] = (directory / file).read_text()
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": generator["name"]}, "data": data})
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] != "Namespace":
                obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def strip_hashes(value):
    """kustomize's generated-name suffix (-<10 chars>) off every string."""
    if isinstance(value, dict):
        return {k: strip_hashes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_hashes(v) for v in value]
    if isinstance(value, str):
        return re.sub(r"^([a-z0-9-]+-config)-[a-z0-9]{10}$", r"\1", value)
    return value


def same(kustomize_file, fallback_file):
    def keyed(path):
        objects = strip_hashes(load_all(Path(path).read_text()))
        return {(o["kind"], o["metadata"]["name"]): o for o in objects}

    a, b = keyed(kustomize_file), keyed(fallback_file)
    problems = [f"{key} only in {kustomize_file}" for key in a.keys() - b.keys()]
    problems += [f"{key} only in {fallback_file}" for key in b.keys() - a.keys()]
    problems += [f"{key} differs" for key in a.keys() & b.keys() if a[key] != b[key]]
    return problems


def under(path, mounts):
    """The mount (volume name, mountPath) that holds `path`, if any."""
    path = PurePosixPath(path)
    for name, mount_path in mounts:
        if path == PurePosixPath(mount_path) or PurePosixPath(mount_path) in path.parents:
            return name
    return None


def policy(rendered, config_file, collector_rendered):
    problems = []
    check = problems.append
    objects = load_all(Path(rendered).read_text())
    config_text = Path(config_file).read_text()
    config = tomllib.loads(config_text)
    server = config.get("server", {})

    deployments = [o for o in objects if o["kind"] == "Deployment"]
    if len(deployments) != 1:
        return [f"expected one Deployment, found {len(deployments)}"]
    pod = deployments[0]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    sidecars = [c for c in pod.get("initContainers", []) if c["name"] == "llm-sidecar"]
    if not sidecars:
        return ["no initContainer named llm-sidecar"]
    sidecar = sidecars[0]
    mounts = [(m["name"], m["mountPath"]) for m in sidecar.get("volumeMounts", [])]

    # A native sidecar, not an init step that must exit.
    if sidecar.get("restartPolicy") != "Always":
        check("llm-sidecar: restartPolicy must be Always (a native sidecar)")

    # Probes: gRPC health on the port `[server] health` listens on, which
    # must be reachable from the kubelet (not loopback).
    health = server.get("health", "")
    host, _, port = health.rpartition(":")
    if not health or host.strip("[]") in ("127.0.0.1", "::1", "localhost"):
        check(f"{config_file}: [server] health must listen beyond loopback for the kubelet, got {health!r}")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        grpc = sidecar.get(probe, {}).get("grpc")
        if not grpc:
            check(f"llm-sidecar: {probe} must be a grpc probe")
        elif port and str(grpc.get("port")) != port:
            check(f"llm-sidecar: {probe} probes port {grpc.get('port')}, [server] health is {health}")
    if port and int(port) not in [p["containerPort"] for p in sidecar.get("ports", [])]:
        check(f"llm-sidecar: no containerPort {port} for [server] health")

    # Resources and hardening.
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in sidecar.get("resources", {}).get(kind, {}):
                check(f"llm-sidecar: resources.{kind}.{resource} is not set")
    pod_security = pod.get("securityContext", {})
    for container in pod.get("initContainers", []) + pod["containers"]:
        security = {**pod_security, **container.get("securityContext", {})}
        name = container["name"]
        if security.get("runAsNonRoot") is not True:
            check(f"{name}: runAsNonRoot is not true")
        if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            check(f"{name}: seccompProfile is not RuntimeDefault")
        container_security = container.get("securityContext", {})
        if container_security.get("readOnlyRootFilesystem") is not True:
            check(f"{name}: readOnlyRootFilesystem is not true")
        if container_security.get("allowPrivilegeEscalation") is not False:
            check(f"{name}: allowPrivilegeEscalation is not false")
        if container_security.get("capabilities", {}).get("drop") != ["ALL"]:
            check(f"{name}: capabilities.drop is not [ALL]")

    # With a read-only root, everything the sidecar writes must be on an
    # emptyDir, and the app must mount the socket's.
    writes = {"[server] uds": server.get("uds"), "[ledger] path": config.get("ledger", {}).get("path")}
    for key, path in writes.items():
        if not path:
            check(f"{config_file}: {key} is not set (the default is under /tmp on a read-only root)")
            continue
        volume = under(PurePosixPath(path).parent, mounts)
        if volume is None or "emptyDir" not in volumes.get(volume, {}):
            check(f"llm-sidecar: {key} {path} is not on a mounted emptyDir")
    socket_volume = under(PurePosixPath(server.get("uds", "/")).parent, mounts)
    for app in pod["containers"]:
        if socket_volume not in [m["name"] for m in app.get("volumeMounts", [])]:
            check(f"{app['name']}: does not mount the socket volume {socket_volume}")

    # Keys from a Secret volume, the config from the ConfigMap we render.
    for name, provider in config.get("providers", {}).items():
        file = provider.get("api_key_file")
        if file and "secret" not in volumes.get(under(file, mounts), {}):
            check(f"providers.{name}.api_key_file {file} is not on a mounted Secret")
    # The fleet ledger's URL holds a password: from a Secret, never the ConfigMap.
    ledger = config.get("ledger", {})
    if "url" in ledger:
        check(f"{config_file}: [ledger] url puts the database password in the ConfigMap; use url_file")
    url_file = ledger.get("url_file")
    if url_file and "secret" not in volumes.get(under(url_file, mounts), {}):
        check(f"[ledger] url_file {url_file} is not on a mounted Secret")
    args = sidecar.get("args", [])
    if "--config" not in args:
        check("llm-sidecar: no --config argument")
    else:
        config_path = PurePosixPath(args[args.index("--config") + 1])
        volume = volumes.get(under(config_path, mounts), {})
        config_map = volume.get("configMap", {}).get("name")
        rendered_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
        data = rendered_maps.get(config_map, {}).get("data", {})
        if data.get(config_path.name) != config_text:
            check(f"llm-sidecar: --config {config_path} is not {config_file} from ConfigMap {config_map}")

    # Telemetry: the variables the sidecar reads (src/telemetry/config.rs),
    # pointed at the example collector's Service.
    env = {e["name"]: e for e in sidecar.get("env", [])}
    for name, field in (("K8S_POD_NAME", "metadata.name"), ("K8S_NAMESPACE_NAME", "metadata.namespace"),
                        ("K8S_NODE_NAME", "spec.nodeName")):
        if env.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != field:
            check(f"llm-sidecar: env {name} is not the downward-API {field}")
    # These override the config file (README, Configuration): set in the
    # pod they would silently win over the ConfigMap.
    for name in sorted(env):
        if name in ("LLM_SIDECAR_CONFIG", "LLM_SIDECAR_UDS", "LLM_SIDECAR_TCP", "LLM_SIDECAR_HTTP",
                    "LLM_SIDECAR_ADMIN", "LLM_SIDECAR_LEDGER"):
            check(f"llm-sidecar: env {name} would override {config_file}")
    if "OTEL_SERVICE_NAME" not in env:
        check("llm-sidecar: env OTEL_SERVICE_NAME is not set")
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", {}).get("value", "")
    services = {(o["metadata"]["name"], o["metadata"].get("namespace")): o
                for o in load_all(Path(collector_rendered).read_text()) if o["kind"] == "Service"}
    match = re.fullmatch(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?:(\d+)", endpoint)
    if not match:
        check(f"llm-sidecar: OTEL_EXPORTER_OTLP_ENDPOINT {endpoint!r} is not http://SERVICE.NAMESPACE.svc:PORT")
    else:
        service = services.get((match[1], match[2]))
        if service is None:
            check(f"OTEL_EXPORTER_OTLP_ENDPOINT: no Service {match[1]} in namespace {match[2]} in the collector manifests")
        elif int(match[3]) not in [p["port"] for p in service["spec"]["ports"]]:
            check(f"OTEL_EXPORTER_OTLP_ENDPOINT: Service {match[1]} has no port {match[3]}")
    return problems


def otel(config_file):
    config = yaml.safe_load(Path(config_file).read_text())
    problems = []
    service = config.get("service", {})
    for extension in service.get("extensions", []):
        if extension not in config.get("extensions", {}):
            problems.append(f"service.extensions: {extension} is not defined")
    for name, pipeline in service.get("pipelines", {}).items():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                if component not in (config.get(section) or {}):
                    problems.append(f"pipelines.{name}.{section}: {component} is not defined")
        if pipeline.get("processors", [None])[0] != "memory_limiter":
            problems.append(f"pipelines.{name}: memory_limiter should come first")
    return problems


def main():
    command, *args = sys.argv[1:]
    if command == "render":
        yaml.safe_dump_all(render(args[0]), sys.stdout, sort_keys=False)
        return
    problems = {"same": same, "policy": policy, "otel": otel}[command](*args)
    for problem in problems:
        print(f"  {command}: {problem}", file=sys.stderr)
    print(f"validate-deploy: {command} {' '.join(args)}: {'FAILED' if problems else 'ok'}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
