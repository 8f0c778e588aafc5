#!/usr/bin/env python3
"""Evaluates the PromQL of the dashboard and the rules (lines `KIND<TAB>NAME<TAB>EXPR` from
.ci/promql_exprs.py on stdin) against a Prometheus that scrapes the gateway and evaluates the
rules, and fails on anything that shows a misspelt metric or label:

  - dashboard: the whole expression must return data;
  - record: the recorded series must exist (Prometheus evaluated the rule and got data), and
    so must every series selector of its expression;
  - alert: every series selector of the expression must return data (an alert's whole
    expression is empty unless it fires) and the expression must evaluate without error.

A selector is checked on its metric name and `=` matchers, plus the presence of each label used
with `!=`, `=~` or `!~` (so `status=~"5.."` is checked without needing a 5xx). Selectors of
series that only exist in a cluster (kube-state-metrics `kube_*`, cAdvisor `container_*`) are
reported as skipped; an expression made only of such selectors is skipped.
Usage: promql_check.py http://127.0.0.1:9090 < exprs.tsv
"""
import json
import re
import sys
import urllib.parse
import urllib.request

CLUSTER_ONLY = re.compile(r"^(kube_|container_)")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan", "atan2"}
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


def query(base: str, expr: str):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    if body.get("status") != "success":
        raise RuntimeError(body.get("error", "query failed"))
    return body["data"]["result"]


def selectors(expr: str):
    """(metric, [(label, op, value)]) for every series selector of expr. A small tokenizer for
    the expressions of this repository, not a PromQL parser: strings are blanked (their matchers
    read first), grouping clauses and durations removed, and what is left that looks like a name
    not followed by `(` is a metric."""
    found = []
    for m in re.finditer(r"(%s)?\s*\{([^{}]*)\}" % NAME, expr):
        name = m.group(1)
        if name in KEYWORDS:
            name = None
        matchers = [(l, op, v) for l, op, v in MATCHER.findall(m.group(2))]
        if name is None:
            name = next((v for l, op, v in matchers if l == "__name__" and op == "="), None)
        found.append((name, [x for x in matchers if x[0] != "__name__"]))
    rest = re.sub(r"(%s)?\s*\{[^{}]*\}" % NAME, " ", expr)
    rest = re.sub(r'"(?:[^"\\]|\\.)*"', " ", rest)
    rest = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    rest = re.sub(r"\boffset\s+\S+", " ", rest)
    for m in re.finditer(r"(?<![\w:.])(%s)(?![\w:])(?!\s*\()" % NAME, rest):
        name = m.group(1)
        if name.lower() not in KEYWORDS and not re.fullmatch(r"[0-9.eE+-]+", name):
            found.append((name, []))
    return [(n, ms) for n, ms in found if n]


def accepts_empty(op, value) -> bool:
    if op == "!=":
        return value != ""
    try:
        hit = re.fullmatch(value.replace("\\\\", "\\"), "") is not None
    except re.error:
        return True
    return hit if op == "=~" else not hit


def selector_probe(name, matchers) -> str:
    """The selector reduced to what must exist: its `=` matchers, and the presence of each label
    whose other matchers refuse an empty value (e.g. `code=~"a|b"`, not `namespace=~".*"`)."""
    kept = [f'{l}{op}"{v}"' for l, op, v in matchers if op == "="]
    eq = {k for k, o, _ in matchers if o == "="}
    kept += sorted({f'{l}!=""' for l, op, v in matchers if op != "=" and l not in eq and not accepts_empty(op, v)})
    return f"{name}{{{', '.join(kept)}}}" if kept else name


def main() -> int:
    base = sys.argv[1].rstrip("/")
    rows = [line.rstrip("\n").split("\t", 2) for line in sys.stdin if line.strip()]
    failures = skipped = passed = 0
    probed = {}

    def has_data(q):
        if q not in probed:
            probed[q] = bool(query(base, q))
        return probed[q]

    for kind, name, expr in rows:
        label = f"{kind} {name}: {expr}"
        sels = selectors(expr)
        cluster = [s for s in sels if CLUSTER_ONLY.match(s[0])]
        local = [s for s in sels if not CLUSTER_ONLY.match(s[0])]
        try:
            if sels and not local:
                skipped += 1
                print(f"SKIP  (cluster-only series) {label}")
                continue
            problems = []
            if kind == "dashboard":
                if not query(base, expr):
                    problems.append("no data")
            else:
                query(base, expr)  # evaluates without error
                if kind == "record" and not has_data(name):
                    problems.append(f"recorded series {name} has no data")
                for sel in local:
                    probe = selector_probe(*sel)
                    if not has_data(probe):
                        problems.append(f"no data for {probe}")
        except Exception as e:  # noqa: BLE001 - report every failure the same way
            problems = [f"error: {e}"]
        if problems:
            failures += 1
            print(f"EMPTY {label}\n      " + "\n      ".join(problems))
        else:
            passed += 1
            note = f" (skipped cluster-only {sorted({s[0] for s in cluster})})" if cluster else ""
            print(f"ok    {kind} {name}{note}")
    print(f"promql: {passed} passed, {failures} failed, {skipped} skipped")
    return 1 if failures or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
