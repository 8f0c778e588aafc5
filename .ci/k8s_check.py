#!/usr/bin/env python3
"""Checks rendered kustomize output (base and overlays) against the gateway itself.

Schema: core kinds are validated with kubernetes-validate (strict: unknown fields fail) for
K8S_VERSION; CRD kinds (ExternalSecret, ServiceMonitor, PrometheusRule) get structural checks
here, since their schemas are not in that package.
Semantics: the facts that break a deployment silently if they drift from the code:
  - every environment variable set is one the binary reads (`--list-env`) or the AWS SDK's;
    the required ones are set; authentication is not disabled;
  - container ports equal the ports of LISTEN_ADDR / METRICS_ADDR; the Service and the
    ServiceMonitor point at them by name; probes use /healthz and /readyz on `http`;
  - terminationGracePeriodSeconds exceeds the gateway's drain (SHUTDOWN_TIMEOUT parsed from
    src/startup.rs) plus the preStop pause;
  - the restricted securityContext; requests and limits;
  - no secret value in the manifests (no Secret objects, no literal values for secret
    variables, no AWS keys).

Usage: k8s_check.py BINARY RENDERED.yaml... (each file one `kubectl kustomize` output;
a file name containing "overlays" must also have a real image reference)
"""
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

K8S_VERSION = "1.30.0"  # lifecycle.preStop.sleep needs 1.30+
CRD_KINDS = {"ExternalSecret", "ServiceMonitor", "PrometheusRule"}
# Read by the AWS SDK's default chain or tracing, not by config.rs (README: Configuration).
AWS_AND_LOG_VARS = {"AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                    "AWS_REQUEST_CHECKSUM_CALCULATION", "RUST_LOG"}
SECRET_VARS = {"FINPASS_API_KEY", "FINPASS_API_SECRET", "CALLER_TOKENS"}
REQUIRED_VARS = {"FINPASS_API_KEY", "FINPASS_API_SECRET", "STATEMENTS_BUCKET", "AWS_REGION"}
AUTH_VARS = {"CALLER_TOKENS", "CALLER_TOKENS_FILE", "JWT_JWKS_URL", "JWT_PUBLIC_KEY_FILE"}
FORBIDDEN_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
NONROOT_UID = 65532

errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)
    return cond


def shutdown_timeout_secs(root: Path) -> int:
    src = (root / "src/startup.rs").read_text()
    m = re.search(r"SHUTDOWN_TIMEOUT:\s*Duration\s*=\s*Duration::from_secs\((\d+)\)", src)
    if not m:
        sys.exit("k8s_check: SHUTDOWN_TIMEOUT not found in src/startup.rs; update this check")
    return int(m.group(1))


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def validate_crd(doc, where):
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind == "ExternalSecret":
        check(doc["apiVersion"].startswith("external-secrets.io/"), f"{where}: apiVersion")
        check(spec.get("secretStoreRef", {}).get("name"), f"{where}: secretStoreRef.name")
        check(spec.get("target", {}).get("name"), f"{where}: target.name")
        for d in spec.get("data", []):
            check(d.get("secretKey") and d.get("remoteRef", {}).get("key"), f"{where}: data entry {d}")
    elif kind == "ServiceMonitor":
        check(doc["apiVersion"] == "monitoring.coreos.com/v1", f"{where}: apiVersion")
        check(spec.get("selector", {}).get("matchLabels"), f"{where}: selector.matchLabels")
        check(spec.get("endpoints"), f"{where}: endpoints")
    elif kind == "PrometheusRule":
        check(doc["apiVersion"] == "monitoring.coreos.com/v1", f"{where}: apiVersion")
        for g in spec.get("groups", []):
            for r in g.get("rules", []):
                name = r.get("alert") or r.get("record")
                check(name and r.get("expr"), f"{where}: rule without name or expr: {r}")
                if r.get("alert"):
                    check(r.get("labels", {}).get("severity") in ("critical", "warning", "info"),
                          f"{where}: {name}: severity label")
                    check({"summary", "description"} <= set(r.get("annotations", {})),
                          f"{where}: {name}: summary/description annotations")
                    check("for" in r, f"{where}: {name}: `for:`")


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_rendering(path: str, known_vars: set, drain: int):
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        where = f"{path}: {d['kind']}/{d['metadata']['name']}"
        if d["kind"] in CRD_KINDS:
            validate_crd(d, where)
            continue
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{where}: schema: {e.message} at {'/'.join(map(str, e.path))}")

    one = lambda kind: (by_kind.get(kind) or [None])[0]
    dep, svc, cm_list = one("Deployment"), one("Service"), by_kind.get("ConfigMap", [])
    if not check(dep and svc, f"{path}: no Deployment or Service"):
        return
    pod = dep["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    (c,) = [c for c in spec["containers"] if c["name"] == "finpass-gateway"]

    # --- environment -------------------------------------------------------------------
    configmaps = {cm["metadata"]["name"]: cm.get("data", {}) for cm in cm_list}
    env = {}  # name -> "configmap" | "secret" | "literal"
    for ref in c.get("envFrom", []):
        if "configMapRef" in ref:
            name = ref["configMapRef"]["name"]
            check(name in configmaps, f"{path}: envFrom ConfigMap {name} not rendered")
            env.update({k: "configmap" for k in configmaps.get(name, {})})
        else:
            errors.append(f"{path}: envFrom {ref}: secrets must be referenced key by key")
    for e in c.get("env", []):
        vf = e.get("valueFrom", {})
        env[e["name"]] = "secret" if "secretKeyRef" in vf else "literal" if "value" in e else "other"
    cm_data = {}
    for ref in c.get("envFrom", []):
        cm_data.update(configmaps.get(ref.get("configMapRef", {}).get("name"), {}))
    cm_data.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    for name, source in sorted(env.items()):
        check(name in known_vars or name in AWS_AND_LOG_VARS,
              f"{path}: {name} is not read by the gateway (not in --list-env)")
        check(name not in FORBIDDEN_VARS, f"{path}: static AWS credential {name}; use IRSA")
        if name in SECRET_VARS:
            check(source == "secret", f"{path}: {name} must come from a secretKeyRef, not {source}")
    check(REQUIRED_VARS <= set(env), f"{path}: required variables missing: {REQUIRED_VARS - set(env)}")
    check(AUTH_VARS & set(env), f"{path}: no caller authentication configured ({AUTH_VARS})")
    check(cm_data.get("AUTH_DISABLED", "false") != "true", f"{path}: AUTH_DISABLED=true")
    externals = {es["spec"]["target"]["name"]: {d["secretKey"] for d in es["spec"].get("data", [])}
                 for es in by_kind.get("ExternalSecret", [])}
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            check(ref["key"] in externals.get(ref["name"], set()),
                  f"{path}: secret key {ref['name']}/{ref['key']} is not provided by an ExternalSecret")
    for keys in externals.values():
        for k in keys:
            check(k in known_vars, f"{path}: ExternalSecret key {k} is not a gateway variable")

    # --- ports, Service, ServiceMonitor, probes -------------------------------------------
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    listen, metrics = cm_data.get("LISTEN_ADDR"), cm_data.get("METRICS_ADDR")
    if check(listen and metrics, f"{path}: LISTEN_ADDR and METRICS_ADDR must be set explicitly"):
        check(ports.get("http") == port_of(listen), f"{path}: port http {ports.get('http')} != LISTEN_ADDR {listen}")
        check(ports.get("metrics") == port_of(metrics), f"{path}: port metrics {ports.get('metrics')} != METRICS_ADDR {metrics}")
        for addr in (listen, metrics):
            check(not addr.startswith("127.") and not addr.startswith("localhost"),
                  f"{path}: {addr} is loopback, unreachable from the kubelet and the Service")
    check(matches(svc["spec"]["selector"], pod_labels), f"{path}: Service selector does not match the pods")
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    for name in ("http", "metrics"):
        check(svc_ports.get(name, {}).get("targetPort") == name, f"{path}: Service port {name} -> targetPort {name}")
    for sm in by_kind.get("ServiceMonitor", []):
        check(matches(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]),
              f"{path}: ServiceMonitor selector does not match the Service")
        for ep in sm["spec"]["endpoints"]:
            check(ep.get("port") == "metrics" and ep.get("path", "/metrics") == "/metrics",
                  f"{path}: ServiceMonitor endpoint {ep}")
    for probe, want in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        p = c.get(probe)
        if probe == "startupProbe" and p is None:
            continue
        get = (p or {}).get("httpGet", {})
        check(get.get("path") == want and get.get("port") == "http", f"{path}: {probe} must GET {want} on port http")

    # --- shutdown --------------------------------------------------------------------------
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check(grace > drain + pre_stop,
          f"{path}: terminationGracePeriodSeconds {grace} <= drain {drain} s + preStop {pre_stop} s")

    # --- security ----------------------------------------------------------------------------
    psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
    eff = lambda k: csc.get(k, psc.get(k))
    check(eff("runAsNonRoot") is True, f"{path}: runAsNonRoot")
    check(eff("runAsUser") == NONROOT_UID, f"{path}: runAsUser {NONROOT_UID}")
    check(csc.get("readOnlyRootFilesystem") is True, f"{path}: readOnlyRootFilesystem")
    check(csc.get("allowPrivilegeEscalation") is False, f"{path}: allowPrivilegeEscalation false")
    check("ALL" in csc.get("capabilities", {}).get("drop", []), f"{path}: capabilities drop ALL")
    check((eff("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{path}: seccompProfile RuntimeDefault")
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        check({"cpu", "memory"} <= set(res.get(kind, {})), f"{path}: resources.{kind} cpu and memory")
    sa = one("ServiceAccount")
    check(sa and sa["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "").startswith("arn:aws:iam::"),
          f"{path}: ServiceAccount needs the IRSA role-arn annotation")
    check(spec.get("serviceAccountName") == (sa or {}).get("metadata", {}).get("name"), f"{path}: serviceAccountName")

    # --- the other objects point at the pods ---------------------------------------------------
    for kind in ("PodDisruptionBudget",):
        for o in by_kind.get(kind, []):
            check(matches(o["spec"]["selector"]["matchLabels"], pod_labels), f"{path}: {kind} selector")
    for np in by_kind.get("NetworkPolicy", []):
        check(matches(np["spec"]["podSelector"]["matchLabels"], pod_labels), f"{path}: NetworkPolicy podSelector")
        in_ports = {p["port"] for rule in np["spec"].get("ingress", []) for p in rule.get("ports", [])}
        check(in_ports <= {"http", "metrics"}, f"{path}: NetworkPolicy opens {in_ports}")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        check(hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], f"{path}: HPA target")
        check(dep["spec"].get("replicas", 1) >= hpa["spec"]["minReplicas"],
              f"{path}: Deployment replicas below the HPA's minReplicas")

    # --- no secret values --------------------------------------------------------------------------
    for s in by_kind.get("Secret", []):
        errors.append(f"{path}: Secret/{s['metadata']['name']} rendered: secrets come from ExternalSecret only")
    for name, data in configmaps.items():
        leaked = (SECRET_VARS | FORBIDDEN_VARS) & set(data)
        check(not leaked, f"{path}: ConfigMap {name} carries secret variables {leaked}")

    if "overlays" in path:
        image = c["image"]
        check("/" in image and ":" in image.rsplit("/", 1)[1] and not image.endswith(":latest"),
              f"{path}: overlay image {image} needs a registry and a pinned tag")


def scan_sources(root: Path):
    """Static AWS keys, 64-hex caller token hashes, private keys: never in git."""
    for f in sorted((root / "k8s").rglob("*")):
        if not f.is_file():
            continue
        text = f.read_text()
        for pattern, what in ((r"\bA(?:KIA|SIA)[0-9A-Z]{16}\b", "an AWS access key id"),
                              (r"\b[0-9a-fA-F]{64}\b", "a 64-hex token hash or key"),
                              (r"-----BEGIN [A-Z ]*PRIVATE KEY-----", "a private key")):
            check(not re.search(pattern, text), f"{f}: contains {what}")
        if f.name == "secret.example.yaml":
            check(all(not l.strip() or l.lstrip().startswith("#") for l in text.splitlines()),
                  f"{f}: the template must stay fully commented out")
        if f.name == "kustomization.yaml":
            check("secret.example.yaml" not in [l.strip(" -") for l in text.splitlines() if not l.lstrip().startswith("#")],
                  f"{f}: secret.example.yaml must not be a resource")


def main(argv) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary, renderings = argv[0], argv[1:]
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([binary, "--list-env"], check=True, capture_output=True, text=True, timeout=30).stdout
    known = {line.strip() for line in out.splitlines() if line.strip()}
    check("LISTEN_ADDR" in known, f"{binary} --list-env printed no LISTEN_ADDR")
    drain = shutdown_timeout_secs(root)
    for path in renderings:
        check_rendering(path, known, drain)
    scan_sources(root)
    for e in errors:
        print(f"FAIL {e}")
    checked = len(renderings)
    print(f"k8s: {checked} renderings checked against {binary} (drain {drain} s, Kubernetes {K8S_VERSION}), "
          f"{len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
