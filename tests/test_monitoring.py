"""The go-live kit in deploy/monitoring/, checked by the real tools: promtool (config, rules,
rule unit tests, every dashboard query parsed), amtool (config and routes), the dashboard
generator's --check, the log schemas against a real server's log lines, and a real
Prometheus scraping a real `embedgate serve` (every rule healthy, every panel query
evaluated, the core panels with data, the instance-down alert pending once it stops)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from support.processes import Served, serving, stop
from support.servers import wait_job_done, wait_until
from support.services import free_port

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "deploy" / "monitoring"
RULES = KIT / "prometheus" / "rules"
OPERATIONS = ROOT / "docs" / "operations.md"
sys.path.insert(0, str(KIT))
import generate  # noqa: E402  (deploy/monitoring/generate.py)

PROBES = {"/health", "/ready", "/metrics"}


def run(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def alerts() -> list[dict[str, Any]]:
    return list(yaml.safe_load((RULES / "alerts.yml").read_text())["groups"][0]["rules"])


def concrete(expr: str, interval: str = "1m") -> str:
    """A dashboard query as Grafana sends it: variables filled in."""
    return (
        expr.replace("$__rate_interval", interval)
        .replace('"$job"', '".+"')
        .replace('"$instance"', '".+"')
    )


def metric_names(expr: str) -> set[str]:
    """embedgate_/process_ names, not parts of recording-rule names (job:embedgate_...:...)."""
    return set(re.findall(r"(?<![\w:])((?:embedgate|process|python)_[a-z_]+)(?![\w:])", expr))


# --- Prometheus and Alertmanager files ---------------------------------------------------------
def test_prometheus_config_rules_and_rule_unit_tests_pass_promtool(tmp_path: Path) -> None:
    """The shipped config as promtool sees it on a host where the key file exists."""
    shutil.copytree(KIT / "prometheus", tmp_path / "prometheus")
    key = tmp_path / "monitor.key"
    key.write_text("egk_example\n")
    config = tmp_path / "prometheus" / "prometheus.yml"
    text = config.read_text()
    assert "/etc/prometheus/secrets/embedgate-monitor.key" in text
    config.write_text(text.replace("/etc/prometheus/secrets/embedgate-monitor.key", str(key)))
    out = run("promtool", "check", "config", str(config))
    assert "SUCCESS" in out and "2 rule files found" in out
    run("promtool", "check", "rules", str(RULES / "recording.yml"), str(RULES / "alerts.yml"))
    out = run("promtool", "test", "rules", "alerts.test.yml", cwd=KIT / "prometheus" / "tests")
    assert "SUCCESS" in out


def test_every_alert_has_a_firing_and_a_silent_case_a_runbook_and_a_table_row() -> None:
    cases = yaml.safe_load((KIT / "prometheus" / "tests" / "alerts.test.yml").read_text())
    firing: set[str] = set()
    silent: set[str] = set()
    for test in cases["tests"]:
        for check in test["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    docs = OPERATIONS.read_text()
    names = [rule["alert"] for rule in alerts()]
    assert len(names) >= 15
    for rule in alerts():
        name = rule["alert"]
        assert name in firing and name in silent, name
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert rule["labels"]["service"] == "embedgate"
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}"
        assert f"\n### {name}\n" in docs, f"no runbook section for {name}"
        section = docs.split(f"\n### {name}\n")[1].split("\n### ")[0]
        assert all(word in section for word in ("**Means**", "**Check**", "**Do**", "**Escalate"))
        assert re.search(rf"\| {name} \| {rule['labels']['severity']} \|", docs), name


def test_alertmanager_config_and_every_alert_routes_to_its_receiver() -> None:
    config = str(KIT / "alertmanager" / "alertmanager.yml")
    assert "SUCCESS" in run("amtool", "check-config", config)
    receivers = {"page": "oncall-pager", "ticket": "ops-tickets"}
    for rule in alerts():
        labels = [f"{k}={v}" for k, v in rule["labels"].items()]
        out = run(
            "amtool", "config", "routes", "test", f"--config.file={config}",
            f"alertname={rule['alert']}", *labels,
        )  # fmt: skip
        assert out.split()[0] == receivers[rule["labels"]["severity"]], rule["alert"]


def test_the_metrics_rules_and_panels_use_are_all_exported() -> None:
    """A misspelt metric in a rule or panel would silently return nothing."""
    exported = set()
    for line in (KIT / "metrics.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, kind = line.split()
            exported.add(name)
            suffixes = {
                "counter": ["_total"],
                "histogram": ["_bucket", "_sum", "_count"],
                "info": ["_info"],
            }
            exported.update(name + s for s in suffixes.get(kind, []))
    exprs = [r["expr"] for r in alerts()] + [
        r["expr"]
        for r in yaml.safe_load((RULES / "recording.yml").read_text())["groups"][0]["rules"]
    ]
    exprs += [e for panel in generate.panels() for e in panel.exprs]
    used = set().union(*(metric_names(e) for e in exprs))
    assert used, "no metric names found"
    assert used <= exported, used - exported


# --- Grafana ---------------------------------------------------------------------------------
def test_the_dashboard_is_generated_fresh_and_portable(tmp_path: Path) -> None:
    run(sys.executable, str(KIT / "generate.py"), "--check")
    board = json.loads((KIT / "grafana" / "dashboards" / "embedgate.json").read_text())
    text = json.dumps(board)
    assert "http://" not in text and "https://" not in text and "localhost" not in text
    assert {v["name"] for v in board["templating"]["list"]} >= {"datasource", "job", "instance"}
    panels = [p for p in board["panels"] if p["type"] != "row"]
    rows = {p["title"] for p in board["panels"] if p["type"] == "row"}
    assert {"SLO overview", "Latency", "Queue and fairness", "Gateway upstreams", "Process"} <= rows
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    assert any(p["type"] == "heatmap" for p in panels)
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            ranges = re.findall(r"\[([^\]]+)\]", target["expr"])
            assert all(r in ("$__rate_interval", "1h") for r in ranges), target["expr"]
    # every query parses: promtool checks them as recording rules
    rules = {
        "groups": [
            {
                "name": "panels",
                "rules": [
                    {"record": f"panel:q{i}", "expr": concrete(expr)}
                    for i, expr in enumerate(e for p in generate.panels() for e in p.exprs)
                ],
            }
        ]
    }
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    assert "SUCCESS" in run("promtool", "check", "rules", str(tmp_path / "panels.yml"))
    for provisioning in (KIT / "grafana" / "provisioning").rglob("*.yml"):
        assert yaml.safe_load(provisioning.read_text())["apiVersion"] == 1


# --- logs ----------------------------------------------------------------------------------
def test_the_log_shipping_configs_name_the_real_files_and_fields() -> None:
    """Syntax and names only: Alloy and Filebeat cannot run here."""
    alloy = (KIT / "logs" / "config.alloy").read_text()
    assert alloy.count("{") == alloy.count("}")
    defined = set(re.findall(r'^(loki\.\w+(?:\.\w+)?) "(\w+)"', alloy, re.M))
    for target in re.findall(r"(loki\.\w+)\.(\w+)\.receiver", alloy):
        assert target in defined, target
    filebeat = yaml.safe_load((KIT / "logs" / "filebeat.yml").read_text())
    assert {i["id"] for i in filebeat["filebeat.inputs"]} == {"embedgate-server", "embedgate-audit"}
    for config in (alloy, (KIT / "logs" / "filebeat.yml").read_text()):
        assert "/var/lib/embedgate/audit.jsonl" in config and "embedgate.service" in config
        assert 'api_key: "${ES_API_KEY}"' in config or "LOKI_URL" in config


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((KIT / "logs" / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(loaded)
    return loaded


def check_logs(served: Served, *, secrets: list[str], texts: list[str]) -> None:
    """The contract on real output: every stderr line is JSON of the server-log schema, the
    access lines match theirs, every audit record matches its own, and no key or input text
    appears in either log."""
    server, access, audit = schema("server-log"), schema("access-log"), schema("audit-log")
    lines = served.stderr.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    accessed = [r for r in records if r.get("logger") == "embedgate.access"]
    assert len(accessed) >= 5
    for record in records:
        jsonschema.validate(record, server)
    for record in accessed:
        jsonschema.validate(record, access)
    audited = [
        json.loads(line) for line in (served.data_dir / "audit.jsonl").read_text().splitlines()
    ]
    assert {r["kind"] for r in audited} >= {"request", "admin"}
    for record in audited:
        jsonschema.validate(record, audit)
    both = served.stderr.read_text() + (served.data_dir / "audit.jsonl").read_text()
    for secret in secrets:
        assert secret not in both
    for text in texts:
        assert text not in both


# --- a real Prometheus on a real server ----------------------------------------------------
class Prometheus:
    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.base}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def rules(self) -> list[dict[str, Any]]:
        groups = httpx.get(f"{self.base}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def alert_state(self, name: str) -> str | None:
        found = [r for r in self.rules() if r.get("name") == name and r["type"] == "alerting"]
        return found[0]["state"] if found else None


def start_prometheus(
    tmp_path: Path, target: str, key_file: Path
) -> tuple[subprocess.Popen[bytes], Prometheus]:
    """The shipped config, with the test's target, key file, and 1 s intervals."""
    home = tmp_path / "prometheus"
    shutil.copytree(KIT / "prometheus", home)
    config = yaml.safe_load((home / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["alerting"]["alertmanagers"] = []
    scrape = config["scrape_configs"][0]
    scrape["authorization"]["credentials_file"] = str(key_file)
    scrape["static_configs"] = [{"targets": [target]}]
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    prometheus = Prometheus(f"http://127.0.0.1:{port}")
    ready = lambda: process.poll() is None and _answers(f"{prometheus.base}/-/ready")  # noqa: E731
    assert wait_until(ready, 60), (tmp_path / "prometheus.log").read_text()[-2000:]
    return process, prometheus


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_a_real_prometheus_scrapes_a_real_server_and_every_rule_and_panel_works(
    tmp_path: Path,
) -> None:
    secret_texts = ["a confidential sentence about quarterly salaries", "monitoring canary"]
    with serving(tmp_path / "data", EMBEDGATE_LOG_LEVEL="info") as served:
        http = httpx.Client(base_url=served.base, headers=served.admin, timeout=60)
        created = http.post("/v1/admin/keys", json={"name": "prometheus", "role": "monitor"})
        assert created.status_code in (200, 201), created.text
        monitor = created.json()["key"]
        key_file = tmp_path / "monitor.key"
        key_file.write_text(monitor + "\n")
        # the live /metrics is the checked-in list, before any traffic
        live = httpx.get(served.base + "/metrics", headers={"Authorization": f"Bearer {monitor}"})
        families = sorted(f"{f.name} {f.type}" for f in text_string_to_metric_families(live.text))
        listed = [
            line for line in (KIT / "metrics.txt").read_text().splitlines()
            if line and not line.startswith("#")
        ]  # fmt: skip
        assert families == listed
        process, prometheus = start_prometheus(
            tmp_path, served.base.removeprefix("http://"), key_file
        )
        try:
            for text in secret_texts:
                assert http.post("/v1/embeddings", json={"input": [text] * 3}).status_code == 200
            assert (
                httpx.post(served.base + "/v1/embeddings", json={"input": "x"}).status_code == 401
            )
            assert http.post("/v1/collections", json={"name": "ops"}).status_code in (200, 201)
            job = http.post(
                "/v1/collections/ops/documents",
                files={"file": ("a.txt", f"{secret_texts[1]} and the runbook.".encode())},
            ).json()["job"]
            assert wait_job_done(http, job["id"])["status"] == "succeeded"
            found = http.post("/v1/collections/ops/search", json={"query": "runbook"})
            assert found.status_code == 200
            # enough scrapes for rate() over 30 s windows, and every rule evaluated
            time.sleep(8)
            assert wait_until(
                lambda: (
                    prometheus.query('up{job="embedgate"} == 1')
                    and all(
                        r.get("lastEvaluation", "0001").startswith("20") for r in prometheus.rules()
                    )
                ),
                60,
            )
            unhealthy = [
                (r["name"], r.get("lastError")) for r in prometheus.rules() if r["health"] != "ok"
            ]
            assert unhealthy == []
            build = prometheus.query("embedgate_build_info")[0]["metric"]
            assert build["mode"] == "local" and build["version"] and build["model"]
            assert prometheus.query('embedgate_storage_up{store="database"} == 1')
            assert prometheus.query('embedgate_storage_up{store="vector_store"} == 1')
            assert prometheus.query('embedgate_ingest_jobs_total{outcome="succeeded"} == 1')
            assert prometheus.query("job_route:embedgate_request_duration_seconds:p95_5m")
            empty = []
            for panel in generate.panels():
                for expr in panel.exprs:
                    result = prometheus.query(concrete(expr, "30s"))
                    if panel.core and not result:
                        empty.append(panel.title)
            assert empty == []
            # no alert fires on a healthy server with traffic
            firing = [r["name"] for r in prometheus.rules() if r.get("state") == "firing"]
            assert firing == []
            stop(served)
            assert wait_until(
                lambda: prometheus.alert_state("EmbedgateInstanceDown") == "pending", 30
            )
        finally:
            process.terminate()
            process.wait(timeout=30)
        check_logs(
            served,
            secrets=[monitor, (served.data_dir / "admin.key").read_text().strip()],
            texts=secret_texts,
        )
