#!/usr/bin/env python3
"""Evaluates PromQL expressions (one per line on stdin) against a Prometheus server and fails
when any returns no data, which is how a typo'd metric or label shows up.

Alert expressions end in a threshold (`... > 0.05`); that comparison is stripped so the
expression is checked for data, not for an alert firing. Expressions over series that only
exist in a cluster (kube-state-metrics `kube_*`) are reported as skipped.
Usage: promql_check.py http://127.0.0.1:9090 < exprs.txt
"""
import json
import re
import sys
import urllib.parse
import urllib.request

THRESHOLD = re.compile(r"^(?P<expr>.*?)\s*(?:>=|<=|==|!=|>|<)\s*(?:bool\s+)?[-+]?[0-9.]+(?:e[-+]?[0-9]+)?\s*$", re.S)
CLUSTER_ONLY = re.compile(r"\bkube_[a-z_]+")


def balanced(expr: str) -> bool:
    depth = 0
    for ch in expr:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def query(base: str, expr: str):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError(body.get("error", "query failed"))
    return body["data"]["result"]


def main() -> int:
    base = sys.argv[1].rstrip("/")
    exprs = [line.strip() for line in sys.stdin if line.strip()]
    failures = skipped = 0
    for expr in exprs:
        m = THRESHOLD.match(expr)
        probe = m.group("expr") if m and balanced(m.group("expr")) else expr
        if CLUSTER_ONLY.search(probe):
            skipped += 1
            print(f"SKIP (cluster-only series) {expr}")
            continue
        try:
            result = query(base, probe)
        except Exception as e:  # noqa: BLE001 - report every failure the same way
            failures += 1
            print(f"ERROR {expr}: {e}")
            continue
        if result:
            print(f"ok    {expr}")
        else:
            failures += 1
            print(f"EMPTY {expr}")
    print(f"promql: {len(exprs) - failures - skipped} passed, {failures} failed, {skipped} skipped")
    return 1 if failures or not exprs else 0


if __name__ == "__main__":
    sys.exit(main())
