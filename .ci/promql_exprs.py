#!/usr/bin/env python3
"""Prints every PromQL expression of a Grafana dashboard and a PrometheusRule, one per line as
`KIND<TAB>NAME<TAB>EXPR` (KIND: dashboard, record or alert), for .ci/promql_check.py.

Dashboard targets have Grafana's variables replaced so Prometheus can run them: interval
macros ($__rate_interval, $__interval, $__range) become 1m, template variables their "All"
value (allValue, else .*). Multi-line rule expressions are collapsed onto one line.
With --rule-groups FILE, the PrometheusRule's spec is also written to FILE as a plain rule
file (`groups:`), which is what `promtool check rules` reads; --no-group-intervals drops the
groups' own `interval:` there (the end-to-end Prometheus evaluates everything every second).
With --check-tests TESTS.yaml, fails unless every alert fires in at least one promtool test
(a non-empty exp_alerts).

Usage: promql_exprs.py [--rule-groups FILE [--no-group-intervals]] [--check-tests TESTS.yaml]
                       DASHBOARD.json... PROMETHEUSRULE.yaml...
"""
import argparse
import json
import re
import sys

import yaml

MACROS = re.compile(r"\$(?:\{__(?:rate_interval|interval|range)\}|__(?:rate_interval|interval|range)\b)")


def one_line(expr) -> str:
    return " ".join(str(expr).split())


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
                yield p.get("title", "?"), one_line(substitute(t["expr"]))


def main(argv) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rule-groups")
    ap.add_argument("--no-group-intervals", action="store_true")
    ap.add_argument("--check-tests")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args(argv)
    groups, alerts = [], []
    for path in args.files:
        if path.endswith(".json"):
            with open(path) as f:
                for title, expr in dashboard_exprs(json.load(f)):
                    print(f"dashboard\t{title}\t{expr}")
            continue
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") != "PrometheusRule":
                    continue
                for group in doc["spec"]["groups"]:
                    groups.append(group)
                    for rule in group["rules"]:
                        kind = "alert" if "alert" in rule else "record"
                        print(f"{kind}\t{rule.get('alert') or rule['record']}\t{one_line(rule['expr'])}")
                        if kind == "alert":
                            alerts.append(rule["alert"])
    if args.rule_groups:
        if args.no_group_intervals:
            groups = [{k: v for k, v in g.items() if k != "interval"} for g in groups]
        with open(args.rule_groups, "w") as f:
            yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    if args.check_tests:
        with open(args.check_tests) as f:
            tests = yaml.safe_load(f)
        fired = {t["alertname"] for case in tests.get("tests", []) for t in case.get("alert_rule_test", [])
                 if t.get("exp_alerts")}
        untested = [a for a in alerts if a not in fired]
        for a in untested:
            print(f"alert {a} fires in no promtool test of {args.check_tests}", file=sys.stderr)
        if untested:
            return 1
        print(f"every alert ({len(alerts)}) fires in a promtool test", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
