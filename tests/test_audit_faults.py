"""The audit log under faults, over HTTP: a log that cannot be written refuses requests
(fail_closed, the default) or only logs (log_only); admin actions are refused, except
revocation, which goes ahead and joins the chain once the log can be written again."""

from __future__ import annotations

import json
from pathlib import Path

from embedgate.app import create_app
from embedgate.config import Settings
from embedgate.security.audit import MemoryAuditSink, chain_key, verify_chain
from support.servers import admin_key, client_for, fake_factory

EMBED = {"input": "hello"}


def test_fail_closed_refuses_requests_while_the_log_cannot_be_written(tmp_path: Path) -> None:
    sink = MemoryAuditSink()
    app = create_app(Settings(data_dir=tmp_path), fake_factory(), audit_sink=sink)
    with client_for(app) as c:
        assert c.post("/v1/embeddings", json=EMBED).status_code == 200
        sink.broken = True  # the disk is full
        c.post("/v1/embeddings", json=EMBED)  # its record is the write that fails
        refused = c.post("/v1/embeddings", json=EMBED)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "audit_unavailable"
        assert c.get("/ready").status_code == 503 and c.get("/health").status_code == 200
        sink.broken = False  # space freed: the very next request is served
        assert c.post("/v1/embeddings", json=EMBED).status_code == 200
        assert c.get("/ready").status_code == 200
    assert verify_chain(sink.records).ok
    assert any('"action":"audit.resumed"' in line for line in sink.records)  # the gap shows


def test_log_only_keeps_serving_while_the_log_cannot_be_written(tmp_path: Path) -> None:
    sink = MemoryAuditSink()
    settings = Settings(data_dir=tmp_path, audit_failure_mode="log_only")
    app = create_app(settings, fake_factory(), audit_sink=sink)
    with client_for(app) as c:
        sink.broken = True
        codes = [c.post("/v1/embeddings", json=EMBED).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        metrics = c.get("/metrics").text  # what EmbedgateAuditLogFailing / RecordsLost read
        assert "embedgate_audit_failing 1.0" in metrics
        assert "embedgate_audit_write_failures_total 3.0" in metrics
        sink.broken = False
        c.post("/v1/embeddings", json=EMBED)
        assert "embedgate_audit_failing 0.0" in c.get("/metrics").text


def test_revocation_goes_ahead_when_the_log_is_down_and_is_recorded_later(
    tmp_path: Path,
) -> None:
    sink = MemoryAuditSink()
    app = create_app(Settings(data_dir=tmp_path), fake_factory(), audit_sink=sink)
    with client_for(app) as c:
        made = c.post("/v1/admin/keys", json={"name": "leaked", "role": "writer"}).json()
        leaked = {"Authorization": f"Bearer {made['key']}"}
        assert c.post("/v1/embeddings", json=EMBED, headers=leaked).status_code == 200
        sink.broken = True
        revoked = c.delete(f"/v1/admin/keys/{made['id']}")
        assert revoked.status_code == 200, revoked.text  # the safe direction is never blocked
        other = c.post("/v1/admin/keys", json={"name": "new", "role": "reader"})
        assert other.status_code == 503  # every other admin action still needs its record
        sink.broken = False  # the next write succeeds and the backlog joins the chain
        assert c.post("/v1/embeddings", json=EMBED, headers=leaked).status_code == 401
    records = [json.loads(line) for line in sink.records]
    held = [r for r in records if r.get("action") == "key.revoke"]
    assert len(held) == 1 and held[0]["backlogged"] is True and held[0]["target"] == made["id"]
    assert verify_chain(sink.records).ok


def test_a_server_restarted_on_a_torn_audit_log_accepts_admin_actions(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path), fake_factory())
    with client_for(app) as c:
        assert c.post("/v1/embeddings", json=EMBED).status_code == 200
    with (tmp_path / "audit.jsonl").open("ab") as handle:
        handle.write(b'{"seq":99,"kind":"req')  # the disk filled mid-line, then was freed
    app = create_app(Settings(data_dir=tmp_path), fake_factory())
    with client_for(app) as c:
        headers = {"Authorization": f"Bearer {admin_key(app)}"}
        made = c.post("/v1/admin/keys", json={"name": "after", "role": "reader"}, headers=headers)
        assert made.status_code == 201, made.text
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    key = chain_key((tmp_path / "pepper").read_bytes().strip())  # keyed by the server's pepper
    assert verify_chain(lines, key).ok
    assert any(json.loads(line).get("action") == "audit.recovered" for line in lines)
