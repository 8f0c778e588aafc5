#!/usr/bin/env python3
"""Checks rendered kustomize output (base and overlays) against the gateway itself.

Schema: core kinds are validated with kubernetes-validate (strict: unknown fields fail) for
K8S_VERSION. CRD kinds (ExternalSecret, ServiceMonitor, PrometheusRule, ScaledObject) are
validated against the schemas that the npm packages @kubernetes-models/{external-secrets,
prometheus-operator,keda} ship (required fields, types, enums, patterns; run with node by
--crd-validator, set up by .ci/k8s-validate.sh). Those generated schemas accept unknown fields,
so the spec keys of each CRD kind are also checked against an allowlist here.
Semantics: the facts that break a deployment silently if they drift from the code or the
cluster:
  - every environment variable set is one the binary reads (`--list-env`) or the AWS SDK's;
    the required ones are set; authentication is not disabled;
  - container ports equal the ports of LISTEN_ADDR / METRICS_ADDR (and PUBLIC_LISTEN_ADDR,
    port `public`); the Service and the ServiceMonitor point at them by name; probes use
    /healthz and /readyz on `http`; an Ingress routes to the `public` port only, and only when
    PUBLIC_LISTEN_ADDR is set (the internal port would expose service tokens to the internet);
  - terminationGracePeriodSeconds >= preStop + drain + margin, the drain being
    CALL_DEADLINE_MS + 5 s (the ConfigMap's value, else the `--list-env` default);
  - the ExternalSecret is external-secrets.io/v1 (v1beta1 is no longer served);
  - no `spec.replicas` on a Deployment an HPA or ScaledObject scales, one autoscaler only,
    scale-down policies, PDB maxUnavailable with unhealthyPodEvictionPolicy AlwaysAllow;
  - the IAM policy file grants every action the gateway uses on the ConfigMap's prefixes and
    the SQS actions on the jobs queue's ARN only, and the ServiceAccount and README point at it;
  - a Deployment that runs several replicas (an autoscaler, or spec.replicas > 1) sets
    JOBS_QUEUE_URL: without it each pod would schedule statement jobs in process;
  - every alert has severity, summary, description, a runbook_url whose
    docs/runbooks/<alert>.md exists with its sections, and a dashboard_url of the dashboard;
  - overlays pin the image by digest; NetworkPolicies never open the instance metadata
    service; the restricted securityContext; requests and limits;
  - no secret value in the manifests (no Secret objects, no literal values for secret
    variables, no AWS keys).

Usage: k8s_check.py [--root DIR] [--iam-policy FILE] [--crd-validator DIR] BINARY RENDERED.yaml...
(each file one `kubectl kustomize` output; a file name containing "overlays" must also pin the
image by digest). --root is the repository (default: this script's), whose k8s/, docs/ and
README.md are scanned.
"""
import argparse
import fnmatch
import ipaddress
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

K8S_VERSION = "1.30.0"  # lifecycle.preStop.sleep needs 1.30+
# The CRD versions the operators serve today (ESO stopped serving v1beta1 in v0.17).
CRD_API_VERSIONS = {
    "ExternalSecret": "external-secrets.io/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "ScaledObject": "keda.sh/v1alpha1",
}
# Spec keys of the CRD kinds (the npm schemas do not reject unknown fields).
CRD_SPEC_KEYS = {
    "ExternalSecret": {"secretStoreRef", "target", "refreshInterval", "refreshPolicy", "data", "dataFrom"},
    "ServiceMonitor": {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels",
                       "podTargetLabels", "sampleLimit", "targetLimit", "labelLimit",
                       "labelNameLengthLimit", "labelValueLengthLimit", "attachMetadata",
                       "scrapeProtocols", "fallbackScrapeProtocol", "scrapeClass", "bodySizeLimit",
                       "keepDroppedTargets"},
    "PrometheusRule": {"groups"},
    "ScaledObject": {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                     "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "advanced",
                     "triggers", "fallback"},
}
RULE_KEYS = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
# Read by the AWS SDK's default chain or tracing, not by config.rs (README: Configuration).
AWS_AND_LOG_VARS = {"AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                    "AWS_REQUEST_CHECKSUM_CALCULATION", "RUST_LOG"}
SECRET_VARS = {"FINPASS_API_KEY", "FINPASS_API_SECRET", "CALLER_TOKENS"}
AUTH_VARS = {"CALLER_TOKENS", "CALLER_TOKENS_FILE", "JWT_JWKS_URL", "JWT_PUBLIC_KEY_FILE"}
FORBIDDEN_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
NONROOT_UID = 65532
# Shutdown: drain = CALL_DEADLINE_MS + DRAIN_EXTRA_SECS (src/startup.rs DRAIN_EXTRA).
DRAIN_EXTRA_SECS = 5
GRACE_MARGIN_SECS = 5
IMDS = ipaddress.ip_address("169.254.169.254")
IAM_POLICY = "k8s/iam/finpass-gateway-policy.json"
# Actions the gateway's calls need (k8s/iam/README.md says why).
IAM_BUCKET_ACTIONS = ["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketLocation"]
IAM_OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
# The audit trail is append-only: the gateway only ever writes new objects under AUDIT_PREFIX.
IAM_ACTIONS_BY_PREFIX = {"AUDIT_PREFIX": ["s3:PutObject"],
                         # Purge markers: written, listed, removed (every version).
                         "PURGE_MARKER_PREFIX": ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"]}
# A purge removes every version of a statement (versioned buckets).
IAM_STATEMENT_ACTIONS = ["s3:DeleteObjectVersion"]
IAM_KMS_ACTIONS = ["kms:GenerateDataKey", "kms:Decrypt"]
# The jobs queue (JOBS_QUEUE_URL; src/storage/iam.rs SQS_OPERATIONS), on its ARN only.
IAM_SQS_ACTIONS = ["sqs:GetQueueAttributes", "sqs:SendMessage", "sqs:ReceiveMessage",
                   "sqs:ChangeMessageVisibility", "sqs:DeleteMessage"]
RUNBOOK_SECTIONS = ("## What it means", "## First three checks", "## Mitigation")
OBJECTIVES = ("finpass_gateway:slo_availability:objective", "finpass_gateway:slo_latency:objective")

errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)
    return cond


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def parse_list_env(out: str):
    """`NAME=DEFAULT`, `NAME=` (empty default) or `NAME` (required) per line.
    Returns (names, defaults, required)."""
    lines = [l.strip() for l in out.splitlines() if l.strip()]
    defaults, required = {}, set()
    for l in lines:
        name, eq, default = l.partition("=")
        if eq:
            defaults[name] = default
        else:
            required.add(name)
    return set(defaults) | required, defaults, required


def crd_schema_errors(validator_dir: str, docs):
    """Validates CRD objects with the @kubernetes-models schemas (node); [(index, message)]."""
    if not docs:
        return []
    proc = subprocess.run(["node", str(Path(validator_dir) / "validate.mjs")], input=json.dumps(docs),
                          capture_output=True, text=True, timeout=120, cwd=validator_dir)
    if proc.returncode != 0:
        sys.exit(f"k8s_check: CRD validator failed: {proc.stderr.strip()[-2000:]}")
    return [(r["index"], r["error"]) for r in json.loads(proc.stdout)]


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def validate_crd(doc, where, ctx):
    kind, spec = doc["kind"], doc.get("spec", {})
    want = CRD_API_VERSIONS[kind]
    if not check(doc["apiVersion"] == want,
                 f"{where}: apiVersion {doc['apiVersion']} is not served by the operator; use {want}"
                 + (" (External Secrets Operator v0.17+ no longer serves v1beta1: the Secret would never"
                    " be created and the pods never start)" if kind == "ExternalSecret" else "")):
        return
    unknown = set(spec) - CRD_SPEC_KEYS[kind]
    check(not unknown, f"{where}: unknown spec fields {sorted(unknown)}")
    if kind == "ExternalSecret":
        check(spec.get("secretStoreRef", {}).get("name"), f"{where}: secretStoreRef.name")
        check(spec.get("target", {}).get("name"), f"{where}: target.name")
        for d in spec.get("data", []):
            check(d.get("secretKey") and d.get("remoteRef", {}).get("key"), f"{where}: data entry {d}")
    elif kind == "ServiceMonitor":
        check(spec.get("selector", {}).get("matchLabels"), f"{where}: selector.matchLabels")
        check(spec.get("endpoints"), f"{where}: endpoints")
    elif kind == "PrometheusRule":
        check_prometheus_rule(doc, where, ctx)


def check_prometheus_rule(doc, where, ctx):
    root, dashboard_uid = ctx["root"], ctx["dashboard_uid"]
    records = {}
    for g in doc["spec"].get("groups", []):
        for r in g.get("rules", []):
            name = r.get("alert") or r.get("record")
            check(name and r.get("expr") is not None, f"{where}: rule without name or expr: {r}")
            unknown = set(r) - RULE_KEYS
            check(not unknown, f"{where}: {name}: unknown rule fields {sorted(unknown)}")
            if r.get("record"):
                records[r["record"]] = str(r["expr"])
            if not r.get("alert"):
                continue
            ann = r.get("annotations", {})
            check(r.get("labels", {}).get("severity") in ("critical", "warning", "info"),
                  f"{where}: {name}: severity label (critical = page, warning = ticket, info)")
            check({"summary", "description"} <= set(ann), f"{where}: {name}: summary/description annotations")
            check("for" in r, f"{where}: {name}: `for:`")
            runbook = ann.get("runbook_url", "")
            if check(runbook.endswith(f"/docs/runbooks/{name}.md"),
                     f"{where}: {name}: runbook_url must point at docs/runbooks/{name}.md, got {runbook!r}"):
                path = root / "docs/runbooks" / f"{name}.md"
                if check(path.is_file(), f"{where}: {name}: runbook {path.relative_to(root)} does not exist"):
                    text = path.read_text()
                    for section in RUNBOOK_SECTIONS:
                        check(section in text, f"{path.relative_to(root)}: missing section {section!r}")
            dash = ann.get("dashboard_url", "")
            check(f"/d/{dashboard_uid}/" in dash,
                  f"{where}: {name}: dashboard_url must open the dashboard (uid {dashboard_uid}), got {dash!r}")
    for rec in OBJECTIVES:
        if check(rec in records, f"{where}: recording rule {rec} (the SLO objective) missing"):
            try:
                value = float(records[rec])
            except ValueError:
                value = -1
            check(0.9 <= value < 1, f"{where}: {rec} must be a number in [0.9, 1), got {records[rec]!r}")


def check_scaled_object(so, where, dep_name, namespace):
    spec = so["spec"]
    check(spec["scaleTargetRef"]["name"] == dep_name, f"{where}: scaleTargetRef {spec['scaleTargetRef']}")
    check(spec.get("minReplicaCount", 0) >= 2, f"{where}: minReplicaCount must be >= 2 (one pod per zone failure)")
    prom = [t for t in spec.get("triggers", []) if t.get("type") == "prometheus"]
    cpu = [t for t in spec.get("triggers", []) if t.get("type") == "cpu"]
    check(cpu, f"{where}: a cpu trigger (CPU as the second metric)")
    if check(prom, f"{where}: a prometheus trigger on calls in flight vs capacity"):
        query = prom[0]["metadata"].get("query", "")
        for metric in ("finpass_gateway_calls_in_flight", "finpass_gateway_calls_capacity"):
            check(metric in query, f"{where}: the prometheus trigger's query must use {metric}")
        if namespace:
            found = set(re.findall(r'namespace\s*=\s*"([^"]*)"', query))
            check(found == {namespace},
                  f"{where}: the query selects namespace {sorted(found)} but the ScaledObject is in {namespace!r}")
    policies = (spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {})
                .get("scaleDown", {}).get("policies"))
    check(policies, f"{where}: advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.policies")


def imds_reachable(rule) -> bool:
    ports = rule.get("ports")
    if ports and not any(p.get("port") in (80, "http") or
                         (isinstance(p.get("port"), int) and p.get("endPort", p["port"]) >= 80 >= p["port"])
                         for p in ports):
        return False
    peers = rule.get("to")
    if not peers:
        return True
    for peer in peers:
        block = peer.get("ipBlock")
        if not block:
            continue
        net = ipaddress.ip_network(block["cidr"], strict=False)
        if IMDS in net and not any(IMDS in ipaddress.ip_network(e, strict=False) for e in block.get("except", [])):
            return True
    return False


def check_iam_policy(path: Path, prefixes: dict, where: str):
    """The policy file grants what the gateway's S3 and KMS calls need."""
    if not check(path.is_file(), f"{where}: IAM policy {path} missing"):
        return
    policy = json.loads(path.read_text())
    allowed = []  # (action pattern, resource pattern)
    for st in policy.get("Statement", []):
        if st.get("Effect") != "Allow":
            continue
        acts = st.get("Action", [])
        res = st.get("Resource", [])
        for a in [acts] if isinstance(acts, str) else acts:
            for r in [res] if isinstance(res, str) else res:
                allowed.append((a.lower(), r))

    def grants(action, resource):
        return any(fnmatch.fnmatchcase(action.lower(), a) and fnmatch.fnmatchcase(resource, r) for a, r in allowed)

    buckets = {r for a, r in allowed if r.startswith("arn:aws:s3:::") and "/" not in r and r != "arn:aws:s3:::*"}
    bucket = sorted(buckets)[0] if buckets else "arn:aws:s3:::CHANGE-ME-statements-bucket"
    for a in IAM_BUCKET_ACTIONS:
        check(grants(a, bucket), f"{where}: IAM policy {path.name} lacks {a} on {bucket} (HeadBucket for the S3 "
                                 "check; HEAD of a missing key answers 403 instead of 404 without it)")
    for var, prefix in sorted(prefixes.items()):
        obj = f"{bucket}/{prefix}example.pdf"
        needed = IAM_ACTIONS_BY_PREFIX.get(var, IAM_OBJECT_ACTIONS)
        if var == "STATEMENTS_PREFIX":
            needed = needed + IAM_STATEMENT_ACTIONS
        for a in needed:
            check(grants(a, obj), f"{where}: IAM policy {path.name} lacks {a} on {var} ({prefix}*)")
    for a in IAM_KMS_ACTIONS:
        check(any(fnmatch.fnmatchcase(a.lower(), p) and r.startswith("arn:aws:kms:") for p, r in allowed),
              f"{where}: IAM policy {path.name} lacks {a} on the SSE-KMS key")
    for a, r in allowed:
        check(not (a.startswith("s3:") and r == "*"), f"{where}: IAM policy {path.name} grants {a} on every resource")
    queues = sorted({r for a, r in allowed if r.startswith("arn:aws:sqs:") and "*" not in r})
    for a in IAM_SQS_ACTIONS:
        check(any(grants(a, q) for q in queues), f"{where}: IAM policy {path.name} lacks {a} on the jobs queue "
                                                 "(an arn:aws:sqs:{region}:{account}:{name} without wildcards)")
    for a, r in allowed:
        check(not (a.startswith("sqs:") and (a == "sqs:*" or "*" in r)),
              f"{where}: IAM policy {path.name} grants {a} on {r}: SQS actions belong on the jobs queue's ARN only")


def check_rendering(path: str, env_info, ctx):
    known_vars, defaults, required = env_info
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    by_kind = {}
    crds = []
    for i, d in enumerate(docs):
        by_kind.setdefault(d["kind"], []).append(d)
        where = f"{path}: {d['kind']}/{d['metadata']['name']}"
        if d["kind"] in CRD_API_VERSIONS:
            validate_crd(d, where, ctx)
            if d["apiVersion"] == CRD_API_VERSIONS[d["kind"]]:
                crds.append((where, d))
            continue
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{where}: schema: {e.message} at {'/'.join(map(str, e.path))}")
    if ctx["crd_validator"]:
        for index, message in crd_schema_errors(ctx["crd_validator"], [d for _, d in crds]):
            errors.append(f"{crds[index][0]}: CRD schema: {message}")

    one = lambda kind: (by_kind.get(kind) or [None])[0]
    dep, svc, cm_list = one("Deployment"), one("Service"), by_kind.get("ConfigMap", [])
    if not check(dep and svc, f"{path}: no Deployment or Service"):
        return
    pod = dep["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    namespace = dep["metadata"].get("namespace")
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
    need = required | {"AWS_REGION"}
    check(need <= set(env), f"{path}: required variables missing: {sorted(need - set(env))}")
    check(AUTH_VARS & set(env), f"{path}: no caller authentication configured ({AUTH_VARS})")
    check(cm_data.get("AUTH_DISABLED", "false") != "true", f"{path}: AUTH_DISABLED=true")
    externals = {es["spec"]["target"]["name"]: {d["secretKey"] for d in es["spec"].get("data", [])}
                 for es in by_kind.get("ExternalSecret", [])}
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            check(ref["key"] in externals.get(ref["name"], set()),
                  f"{path}: secret key {ref['name']}/{ref['key']} is not provided by an ExternalSecret")
    # Secret keys mounted as files (WEBHOOK_ENDPOINTS_FILE's content): each file is the path a
    # *_FILE variable names, and its key comes from an ExternalSecret.
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    mounted_keys = set()
    for vol in spec.get("volumes", []):
        secret = vol.get("secret")
        if not secret or vol["name"] not in mounts:
            continue
        for item in secret.get("items", []):
            mounted_keys.add(item["key"])
            check(item["key"] in externals.get(secret["secretName"], set()),
                  f"{path}: mounted secret key {secret['secretName']}/{item['key']} is not provided by an ExternalSecret")
            file = mounts[vol["name"]].rstrip("/") + "/" + item["path"]
            check(any(k.endswith("_FILE") and k in known_vars and v == file for k, v in cm_data.items()),
                  f"{path}: mounted secret file {file} is named by no *_FILE variable")
    for keys in externals.values():
        for k in keys:
            check(k in known_vars or k in mounted_keys,
                  f"{path}: ExternalSecret key {k} is not a gateway variable nor a mounted file")

    # --- ports, Service, ServiceMonitor, probes -------------------------------------------
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    listen, metrics = cm_data.get("LISTEN_ADDR"), cm_data.get("METRICS_ADDR")
    if check(listen and metrics, f"{path}: LISTEN_ADDR and METRICS_ADDR must be set explicitly"):
        check(ports.get("http") == port_of(listen), f"{path}: port http {ports.get('http')} != LISTEN_ADDR {listen}")
        check(ports.get("metrics") == port_of(metrics), f"{path}: port metrics {ports.get('metrics')} != METRICS_ADDR {metrics}")
        for addr in (listen, metrics):
            check(not addr.startswith("127.") and not addr.startswith("localhost"),
                  f"{path}: {addr} is loopback, unreachable from the kubelet and the Service")
    public = cm_data.get("PUBLIC_LISTEN_ADDR")
    if public:
        check(ports.get("public") == port_of(public), f"{path}: port public {ports.get('public')} != PUBLIC_LISTEN_ADDR {public}")
    check(matches(svc["spec"]["selector"], pod_labels), f"{path}: Service selector does not match the pods")
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    for name in ("http", "metrics") + (("public",) if public else ()):
        check(svc_ports.get(name, {}).get("targetPort") == name, f"{path}: Service port {name} -> targetPort {name}")
    for ing in by_kind.get("Ingress", []):
        where = f"{path}: Ingress/{ing['metadata']['name']}"
        check(public, f"{where}: an Ingress needs PUBLIC_LISTEN_ADDR (the internal port serves service tokens)")
        for rule in ing["spec"].get("rules", []):
            for p in rule.get("http", {}).get("paths", []):
                port = p.get("backend", {}).get("service", {}).get("port", {})
                check(port.get("name") == "public",
                      f"{where}: routes {p.get('path')} to port {port}, not the public listener (port name `public`)")
    for sm in by_kind.get("ServiceMonitor", []):
        check(matches(sm["spec"]["selector"].get("matchLabels", {}), svc["metadata"]["labels"]),
              f"{path}: ServiceMonitor selector does not match the Service")
        for ep in sm["spec"].get("endpoints", []):
            check(ep.get("port") == "metrics" and ep.get("path", "/metrics") == "/metrics",
                  f"{path}: ServiceMonitor endpoint {ep}")
    for probe, want in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        p = c.get(probe)
        if probe == "startupProbe" and p is None:
            continue
        get = (p or {}).get("httpGet", {})
        check(get.get("path") == want and get.get("port") == "http", f"{path}: {probe} must GET {want} on port http")

    # --- shutdown: the kubelet's grace period covers preStop + the whole drain -------------
    if "CALL_DEADLINE_MS" in cm_data:
        deadline_ms, source = cm_data["CALL_DEADLINE_MS"], "the ConfigMap"
    elif defaults.get("CALL_DEADLINE_MS"):
        deadline_ms, source = defaults["CALL_DEADLINE_MS"], "the --list-env default"
    else:
        check(False, "the binary's --list-env has no CALL_DEADLINE_MS default: cannot size the drain")
        deadline_ms, source = 0, "nowhere"
    drain = math.ceil(int(deadline_ms) / 1000) + DRAIN_EXTRA_SECS
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check(grace >= pre_stop + drain + GRACE_MARGIN_SECS,
          f"{path}: terminationGracePeriodSeconds {grace} < preStop {pre_stop} s + drain {drain} s "
          f"(CALL_DEADLINE_MS {deadline_ms} from {source}, + {DRAIN_EXTRA_SECS} s) + margin {GRACE_MARGIN_SECS} s: "
          "the kubelet would SIGKILL draining calls")
    for ing in by_kind.get("Ingress", []):
        timeout = ing["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/proxy-read-timeout")
        if timeout is not None:
            check(int(timeout) * 1000 > int(deadline_ms),
                  f"{path}: Ingress/{ing['metadata']['name']} proxy-read-timeout {timeout} s cuts calls "
                  f"shorter than CALL_DEADLINE_MS {deadline_ms}")

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
    prefixes = {k: v for k, v in cm_data.items() if k.endswith("_PREFIX") and v}
    check_iam_policy(ctx["iam_policy"], prefixes, path)

    # --- scaling and disruptions ---------------------------------------------------------------
    dep_name = dep["metadata"]["name"]
    hpas = [h for h in by_kind.get("HorizontalPodAutoscaler", []) if h["spec"]["scaleTargetRef"]["name"] == dep_name]
    scaled = [s for s in by_kind.get("ScaledObject", []) if s["spec"]["scaleTargetRef"]["name"] == dep_name]
    autoscalers = [f"HorizontalPodAutoscaler/{h['metadata']['name']}" for h in hpas] + \
                  [f"ScaledObject/{s['metadata']['name']}" for s in scaled]
    check(len(autoscalers) == 1, f"{path}: Deployment/{dep_name} needs exactly one autoscaler, found {autoscalers}")
    if autoscalers or dep["spec"].get("replicas", 1) > 1:
        queue = cm_data.get("JOBS_QUEUE_URL", "")
        check(re.fullmatch(r"https://sqs\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/\d{12}/[A-Za-z0-9_-]{1,80}", queue),
              f"{path}: Deployment/{dep_name} runs several replicas but JOBS_QUEUE_URL is {queue or 'unset'}: "
              "statement jobs need the shared SQS queue (https://sqs.{region}.amazonaws.com/{account}/{name})")
    if autoscalers:
        check("replicas" not in dep["spec"],
              f"{path}: Deployment/{dep_name} sets spec.replicas ({dep['spec'].get('replicas')}) while "
              f"{autoscalers[0]} manages it: every `kubectl apply -k` would reset a scaled-out Deployment")
    for hpa in hpas:
        check(hpa["spec"].get("minReplicas", 1) >= 2, f"{path}: HPA minReplicas must be >= 2")
        check(hpa["spec"].get("behavior", {}).get("scaleDown", {}).get("policies"),
              f"{path}: HPA behavior.scaleDown.policies (remove pods slowly: they drain for minutes)")
    for so in scaled:
        check_scaled_object(so, f"{path}: ScaledObject/{so['metadata']['name']}", dep_name, namespace)
    pdbs = by_kind.get("PodDisruptionBudget", [])
    check(pdbs, f"{path}: a PodDisruptionBudget")
    for o in pdbs:
        where = f"{path}: PodDisruptionBudget/{o['metadata']['name']}"
        check(matches(o["spec"]["selector"]["matchLabels"], pod_labels), f"{where}: selector")
        check(o["spec"].get("maxUnavailable") == 1 and "minAvailable" not in o["spec"],
              f"{where}: maxUnavailable: 1 (minAvailable does not follow the autoscaler)")
        check(o["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow",
              f"{where}: unhealthyPodEvictionPolicy: AlwaysAllow (unready pods must not block node drains)")

    # --- network ---------------------------------------------------------------------------------
    nps = by_kind.get("NetworkPolicy", [])
    for np in nps:
        where = f"{path}: NetworkPolicy/{np['metadata']['name']}"
        check(matches(np["spec"]["podSelector"]["matchLabels"], pod_labels), f"{where}: podSelector")
        in_ports = {p["port"] for rule in np["spec"].get("ingress", []) for p in rule.get("ports", [])}
        check(in_ports <= {"http", "metrics", "public"}, f"{where}: opens {in_ports}")
        for rule in np["spec"].get("ingress", []):
            check(rule.get("from") and rule.get("ports"), f"{where}: an ingress rule without `from` or `ports` opens the pods to all")
        for rule in np["spec"].get("egress", []):
            check(not imds_reachable(rule), f"{where}: egress rule reaches the instance metadata service {IMDS} "
                                            f"(exclude 169.254.0.0/16; IRSA needs STS, not IMDS): {rule}")
    check(any("Egress" in np["spec"].get("policyTypes", []) for np in nps), f"{path}: a default-deny egress NetworkPolicy")

    # --- no secret values --------------------------------------------------------------------------
    for s in by_kind.get("Secret", []):
        errors.append(f"{path}: Secret/{s['metadata']['name']} rendered: secrets come from ExternalSecret only")
    for name, data in configmaps.items():
        leaked = (SECRET_VARS | FORBIDDEN_VARS) & set(data)
        check(not leaked, f"{path}: ConfigMap {name} carries secret variables {leaked}")

    if "overlays" in path:
        image = c["image"]
        check(re.fullmatch(r"[a-z0-9.-]+(?::\d+)?/[a-z0-9._/-]+(?::[\w.-]+)?@sha256:[0-9a-f]{64}", image),
              f"{path}: overlay image {image!r} must be <registry>/<name>@sha256:<digest> (kustomize `digest:`): "
              "a tag can be moved to other bytes")


def scan_sources(root: Path):
    """Static AWS keys, 64-hex caller token hashes, private keys: never in git. The IAM policy
    is what the ServiceAccount and the README point at."""
    for f in sorted((root / "k8s").rglob("*")):
        if not f.is_file():
            continue
        text = f.read_text()
        for pattern, what in ((r"\bA(?:KIA|SIA)[0-9A-Z]{16}\b", "an AWS access key id"),
                              (r"(?<!sha256:)\b[0-9a-fA-F]{64}\b", "a 64-hex token hash or key"),
                              (r"-----BEGIN [A-Z ]*PRIVATE KEY-----", "a private key")):
            check(not re.search(pattern, text), f"{f}: contains {what}")
        if f.name == "secret.example.yaml":
            check(all(not l.strip() or l.lstrip().startswith("#") for l in text.splitlines()),
                  f"{f}: the template must stay fully commented out")
        if f.name == "kustomization.yaml":
            check("secret.example.yaml" not in [l.strip(" -") for l in text.splitlines() if not l.lstrip().startswith("#")],
                  f"{f}: secret.example.yaml must not be a resource")
    for doc in (root / "k8s/base/serviceaccount.yaml", root / "README.md"):
        check(doc.is_file() and IAM_POLICY in doc.read_text(),
              f"{doc}: does not point at {IAM_POLICY} (the IAM policy the role needs; an inline list drifts)")


def main(argv) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--iam-policy", type=Path)
    ap.add_argument("--crd-validator", help="directory with validate.mjs and the @kubernetes-models packages")
    ap.add_argument("binary")
    ap.add_argument("renderings", nargs="+")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    out = subprocess.run([args.binary, "--list-env"], check=True, capture_output=True, text=True, timeout=30).stdout
    env_info = parse_list_env(out)
    check("LISTEN_ADDR" in env_info[0], f"{args.binary} --list-env printed no LISTEN_ADDR")
    dashboard = json.loads((root / "k8s/monitoring/grafana-dashboard.json").read_text())
    ctx = {"root": root, "dashboard_uid": dashboard["uid"], "crd_validator": args.crd_validator,
           "iam_policy": args.iam_policy or root / IAM_POLICY}
    for path in args.renderings:
        check_rendering(path, env_info, ctx)
    scan_sources(root)
    for e in errors:
        print(f"FAIL {e}")
    fmt = "NAME=DEFAULT" if env_info[1] is not None else "names only (legacy)"
    print(f"k8s: {len(args.renderings)} renderings checked against {args.binary} (--list-env {fmt}, "
          f"Kubernetes {K8S_VERSION}, CRD schemas {'on' if args.crd_validator else 'OFF'}), {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
