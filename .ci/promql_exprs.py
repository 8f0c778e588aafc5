#!/usr/bin/env python3
"""Prints every PromQL expression of a Grafana dashboard and a PrometheusRule, one per line,
for .ci/promql_check.py.

Dashboard targets have Grafana's variables replaced so Prometheus can run them: interval
macros ($__rate_interval, $__interval, $__range) become 1m, template variables their "All"
value (allValue, else .*). Multi-line rule expressions are collapsed onto one line.
With --rule-groups FILE, the PrometheusRule's spec is also written to FILE as a plain rule
file (`groups:`), which is what `promtool check rules` reads.

Usage: promql_exprs.py [--rule-groups FILE] DASHBOARD.json... PROMETHEUSRULE.yaml...
"""
import json
import re
import sys

import yaml

MACROS = re.compile(r"\$(?:\{__(?:rate_interval|interval|range)\}|__(?:rate_interval|interval|range)\b)")


def one_line(expr: str) -> str:
    return " ".join(expr.split())


def dashboard_exprs(dash: dict):
    values = {}
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") in ("query", "custom", "constant", "textbox", "interval"):
            values[var["name"]] = var.get("allValue") or ".*"

    def substitute(expr: str) -> str:
        expr = MACROS.sub("1m", expr)
        for name, value in values.items():
            expr = re.sub(r"\$\{%s(?::[a-z]+)?\}|\$%s\b|\[\[%s\]\]" % ((re.escape(name),) * 3), value, expr)
        if "$" in expr:
            raise SystemExit(f"unresolved Grafana variable in: {expr}")
        return expr

    def panels(items):
        for p in items:
            yield p
            yield from panels(p.get("panels", []))  # rows nest their panels

    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                yield one_line(substitute(t["expr"]))


def main(argv) -> int:
    rule_groups_out = None
    if argv[:1] == ["--rule-groups"]:
        rule_groups_out, argv = argv[1], argv[2:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    groups = []
    for path in argv:
        if path.endswith(".json"):
            with open(path) as f:
                for expr in dashboard_exprs(json.load(f)):
                    print(expr)
            continue
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") != "PrometheusRule":
                    continue
                for group in doc["spec"]["groups"]:
                    groups.append(group)
                    for rule in group["rules"]:
                        print(one_line(rule["expr"]))
    if rule_groups_out:
        with open(rule_groups_out, "w") as f:
            yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
