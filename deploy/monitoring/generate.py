"""The Grafana dashboard, generated: `python deploy/monitoring/generate.py` writes
grafana/dashboards/embedgate.json and the panel list in docs/operations.md; `--check` fails
when either is stale (CI runs it), so the JSON is never edited by hand.

Every panel queries through the `${datasource}` variable and `$__rate_interval`, filtered by
`$job` and `$instance`; nothing names an address. The expressions are also the test's list:
tests/test_monitoring.py parses each with promtool and evaluates it on a real Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DASHBOARD = HERE / "grafana" / "dashboards" / "embedgate.json"
DOCS = HERE.parents[1] / "docs" / "operations.md"
BEGIN, END = "<!-- panels:begin (generate.py) -->", "<!-- panels:end -->"

SEL = 'job=~"$job", instance=~"$instance"'
API = f'{SEL}, route!~"/health|/ready|/metrics"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Panel:
    title: str
    exprs: tuple[str, ...]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries, stat, heatmap
    legend: str = ""
    core: bool = False  # returns data on any serving instance after some traffic (tested)
    description: str = ""


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


ROWS = (
    Row(
        "SLO overview",
        (
            Panel(
                "Availability (non-5xx share, 1h)",
                (
                    f'1 - (sum(rate(embedgate_requests_total{{{API}, status=~"5.."}}[1h])) '
                    f"/ sum(rate(embedgate_requests_total{{{API}}}[1h])))",
                ),
                unit="percentunit",
                kind="stat",
                description="SLO 99.9%: the burn-rate alerts page below it.",
            ),
            Panel(
                "p95 latency, embeddings",
                (
                    "histogram_quantile(0.95, sum by (le) (rate(embedgate_request_duration_"
                    f'seconds_bucket{{{SEL}, route="/v1/embeddings"}}[{RATE}])))',
                ),
                unit="s",
                kind="stat",
            ),
            Panel("Ready replicas", (f"sum(embedgate_ready{{{SEL}}})",), kind="stat", core=True),
            Panel(
                "Version and model",
                (f"embedgate_build_info{{{SEL}}}",),
                kind="stat",
                legend="{{version}} {{model}} {{mode}}",
                core=True,
            ),
        ),
    ),
    Row(
        "Traffic",
        (
            Panel(
                "Requests by route",
                (f"sum by (route) (rate(embedgate_requests_total{{{API}}}[{RATE}]))",),
                unit="reqps",
                legend="{{route}}",
                core=True,
            ),
            Panel(
                "Responses by status",
                (f"sum by (status) (rate(embedgate_requests_total{{{API}}}[{RATE}]))",),
                unit="reqps",
                legend="{{status}}",
                core=True,
            ),
            Panel(
                "Inputs and tokens embedded",
                (
                    f"sum(rate(embedgate_inputs_total{{{SEL}}}[{RATE}]))",
                    f"sum(rate(embedgate_input_tokens_total{{{SEL}}}[{RATE}]))",
                ),
                unit="ops",
                core=True,
            ),
        ),
    ),
    Row(
        "Latency",
        (
            Panel(
                "Request latency heatmap, embeddings",
                (
                    "sum by (le) (increase(embedgate_request_duration_seconds_bucket"
                    f'{{{SEL}, route="/v1/embeddings"}}[{RATE}]))',
                ),
                kind="heatmap",
                unit="s",
                core=True,
            ),
            Panel(
                "p50 / p95 / p99 by route",
                tuple(
                    f"histogram_quantile({q}, sum by (route, le) (rate("
                    f"embedgate_request_duration_seconds_bucket{{{API}}}[{RATE}])))"
                    for q in ("0.5", "0.95", "0.99")
                ),
                unit="s",
                legend="{{route}}",
                core=True,
            ),
            Panel(
                "Forward pass time p95",
                (
                    "histogram_quantile(0.95, sum by (le) (rate("
                    f"embedgate_forward_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                ),
                unit="s",
                core=True,
            ),
        ),
    ),
    Row(
        "Queue and fairness",
        (
            Panel(
                "Queue fill (tokens / max_queued_tokens)",
                (f"embedgate_queue_tokens{{{SEL}}} / embedgate_queue_max_tokens{{{SEL}}}",),
                unit="percentunit",
                legend="{{instance}}",
                core=True,
            ),
            Panel(
                "Queued inputs",
                (f"embedgate_queue_items{{{SEL}}}",),
                legend="{{instance}}",
                core=True,
            ),
            Panel(
                "Batch size p50 and padding waste",
                (
                    "histogram_quantile(0.5, sum by (le) (rate("
                    f"embedgate_batch_size_bucket{{{SEL}}}[{RATE}])))",
                    f"1 - sum(rate(embedgate_batch_tokens_sum{{{SEL}}}[{RATE}])) / "
                    f"sum(rate(embedgate_batch_padded_tokens_total{{{SEL}}}[{RATE}]))",
                ),
                core=True,
            ),
            Panel(
                "429 by route (queue full or limits)",
                (
                    f'sum by (route) (rate(embedgate_requests_total{{{SEL}, status="429"}}'
                    f"[{RATE}]))",
                ),
                unit="reqps",
                legend="{{route}}",
            ),
        ),
    ),
    Row(
        "Model",
        (
            Panel(
                "Model ready",
                (f"embedgate_model_ready{{{SEL}}}",),
                legend="{{instance}}",
                core=True,
            ),
            Panel(
                "Model restarts and failed restarts",
                (
                    f"increase(embedgate_model_restarts_total{{{SEL}}}[1h])",
                    f"increase(embedgate_model_restart_failures_total{{{SEL}}}[1h])",
                ),
                core=True,
            ),
            Panel(
                "Lost passes retried, inputs dropped",
                (
                    f"sum(rate(embedgate_lost_pass_inputs_retried_total{{{SEL}}}[{RATE}]))",
                    f"sum(rate(embedgate_dropped_inputs_total{{{SEL}}}[{RATE}]))",
                ),
                unit="ops",
                core=True,
            ),
        ),
    ),
    Row(
        "Knowledge base",
        (
            Panel(
                "Ingest jobs ended by outcome",
                (f"sum by (outcome) (increase(embedgate_ingest_jobs_total{{{SEL}}}[1h]))",),
                legend="{{outcome}}",
                core=True,
            ),
            Panel(
                "Search p95",
                (
                    "histogram_quantile(0.95, sum by (le) (rate(embedgate_request_duration_"
                    f'seconds_bucket{{{SEL}, route="/v1/collections/{{name}}/search"}}[{RATE}])))',
                ),
                unit="s",
            ),
            Panel(
                "Stores up",
                (f"embedgate_storage_up{{{SEL}}}",),
                legend="{{instance}} {{store}}",
                core=True,
            ),
        ),
    ),
    Row(
        "Security",
        (
            Panel(
                "401 / 403 / 429",
                (
                    "sum by (status) (rate(embedgate_requests_total"
                    f'{{{SEL}, status=~"401|403|429"}}[{RATE}]))',
                ),
                unit="reqps",
                legend="{{status}}",
            ),
        ),
    ),
    Row(
        "Audit log",
        (
            Panel("Audit log failing", (f"embedgate_audit_failing{{{SEL}}}",), core=True),
            Panel(
                "Audit records not written",
                (f"increase(embedgate_audit_write_failures_total{{{SEL}}}[1h])",),
                core=True,
            ),
        ),
    ),
    Row(
        "Gateway upstreams",
        (
            Panel(
                "Upstream healthy",
                (f"embedgate_upstream_healthy{{{SEL}}}",),
                legend="{{instance}} {{upstream}}",
            ),
            Panel(
                "Upstream calls, errors, retries",
                (
                    f"sum by (upstream) (rate(embedgate_upstream_requests_total{{{SEL}}}[{RATE}]))",
                    f"sum by (upstream) (rate(embedgate_upstream_errors_total{{{SEL}}}[{RATE}]))",
                    f"sum by (upstream) (rate(embedgate_upstream_retries_total{{{SEL}}}[{RATE}]))",
                ),
                unit="ops",
                legend="{{upstream}}",
            ),
            Panel(
                "Upstream latency p95",
                (
                    "histogram_quantile(0.95, sum by (upstream, le) (rate("
                    f"embedgate_upstream_latency_seconds_bucket{{{SEL}}}[{RATE}])))",
                ),
                unit="s",
                legend="{{upstream}}",
            ),
        ),
    ),
    Row(
        "Process",
        (
            Panel(
                "Resident memory: server and model process",
                (
                    f"process_resident_memory_bytes{{{SEL}}}",
                    f"embedgate_model_process_resident_bytes{{{SEL}}}",
                ),
                unit="bytes",
                legend="{{instance}}",
                core=True,
            ),
            Panel(
                "CPU",
                (f"rate(process_cpu_seconds_total{{{SEL}}}[{RATE}])",),
                unit="percentunit",
                legend="{{instance}}",
                core=True,
            ),
            Panel(
                "Open file descriptors",
                (f"process_open_fds{{{SEL}}}",),
                legend="{{instance}}",
                core=True,
            ),
        ),
    ),
)


def panels() -> list[Panel]:
    return [panel for row in ROWS for panel in row.panels]


def dashboard() -> dict[str, object]:
    source = {"type": "prometheus", "uid": "${datasource}"}
    out: list[dict[str, object]] = []
    next_id, y = 1, 0
    for row in ROWS:
        out.append(
            {"id": next_id, "type": "row", "title": row.title, "collapsed": False,
             "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []}
        )  # fmt: skip
        next_id, y = next_id + 1, y + 1
        width = 24 // len(row.panels)
        for i, panel in enumerate(row.panels):
            targets = [
                {
                    "refId": chr(ord("A") + n),
                    "datasource": source,
                    "expr": expr,
                    "legendFormat": panel.legend,
                    **({"format": "heatmap"} if panel.kind == "heatmap" else {}),
                }
                for n, expr in enumerate(panel.exprs)
            ]
            out.append(
                {
                    "id": next_id,
                    "type": panel.kind,
                    "title": panel.title,
                    "description": panel.description,
                    "datasource": source,
                    "gridPos": {"h": 8, "w": width, "x": i * width, "y": y},
                    "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                    "targets": targets,
                }
            )
            next_id += 1
        y += 8
    variables = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
        {
            "name": "job",
            "type": "query",
            "datasource": source,
            "query": "label_values(embedgate_build_info, job)",
            "refresh": 2,
            "includeAll": True,
            "multi": True,
        },
        {
            "name": "instance",
            "type": "query",
            "datasource": source,
            "query": 'label_values(embedgate_build_info{job=~"$job"}, instance)',
            "refresh": 2,
            "includeAll": True,
            "multi": True,
        },
    ]
    return {
        "uid": "embedgate",
        "title": "embedgate",
        "tags": ["embedgate"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables},
        "panels": out,
    }


def panel_table() -> str:
    lines = ["| Row | Panel | Query |", "|---|---|---|"]
    for row in ROWS:
        for panel in row.panels:
            query = "<br>".join(f"`{e}`" for e in panel.exprs).replace("|", "\\|")
            lines.append(f"| {row.title} | {panel.title} | {query} |")
    return "\n".join(lines)


def rendered() -> tuple[str, str]:
    text = json.dumps(dashboard(), indent=2) + "\n"
    docs = DOCS.read_text()
    start, end = docs.index(BEGIN) + len(BEGIN), docs.index(END)
    return text, docs[:start] + "\n" + panel_table() + "\n" + docs[end:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when the files are stale")
    args = parser.parse_args()
    text, docs = rendered()
    if args.check:
        stale = [
            str(path)
            for path, want in ((DASHBOARD, text), (DOCS, docs))
            if not path.exists() or path.read_text() != want
        ]
        if stale:
            print(f"stale: {stale}; run python deploy/monitoring/generate.py", file=sys.stderr)
            return 1
        return 0
    DASHBOARD.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD.write_text(text)
    DOCS.write_text(docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
