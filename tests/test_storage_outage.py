"""PostgreSQL stopped and started again under a running embedgate (no restart of embedgate):
requests get 503 `storage_unavailable` with a Retry-After, /ready says so, every request
still shows in the access log, the metrics and the audit log, and service comes back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedgate.app import create_app
from embedgate.config import Settings
from support.servers import admin_key, client_for, fake_factory, wait_until
from support.services import postgres_instance


def test_a_database_outage_is_503_shows_everywhere_and_heals(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with postgres_instance() as pg:
        settings = Settings(data_dir=tmp_path, database_url=pg.url, key_cache_ttl_s=0)
        app = create_app(settings, fake_factory())
        with client_for(app) as c, caplog.at_level("INFO", logger="embedgate.access"):
            assert c.post("/v1/embeddings", json={"input": "before"}).status_code == 200
            unseen = c.post("/v1/admin/keys", json={"name": "p", "role": "monitor"}).json()["key"]
            pg.stop()
            during = c.post("/v1/embeddings", json={"input": "during"})
            assert during.status_code == 503, during.text
            assert during.json()["error"]["code"] == "storage_unavailable"
            assert int(during.headers["Retry-After"]) >= 1
            assert wait_until(lambda: c.get("/ready").status_code == 503, 30)
            assert "database" in c.get("/ready").json()["reason"]
            assert c.get("/health").status_code == 200
            admin = {"Authorization": f"Bearer {admin_key(app)}"}
            down = 'embedgate_storage_up{store="database"} 0.0'  # the alert's series
            # the scrape of a key verified before the outage works (from the key cache), so
            # the outage shows in the metrics; a key never verified here cannot be checked
            assert down in c.get("/metrics", headers=admin).text
            unverified = c.get("/metrics", headers={"Authorization": f"Bearer {unseen}"})
            assert unverified.status_code == 503
            assert c.post("/v1/embeddings", json={"input": "x"}).status_code == 503
            pg.start()
            assert wait_until(lambda: c.get("/ready").status_code == 200, 30)
            up = 'embedgate_storage_up{store="database"} 1.0'
            assert up in c.get("/metrics", headers=admin).text
            after = c.post("/v1/embeddings", json={"input": "after"})
            assert after.status_code == 200, after.text
            metrics = c.get("/metrics", headers={"Authorization": f"Bearer {admin_key(app)}"})
            assert 'embedgate_requests_total{route="/v1/embeddings",status="503"}' in metrics.text
        logged = [getattr(r, "status", None) for r in caplog.records if r.getMessage() == "request"]
        assert 503 in logged and 200 in logged
        audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
        statuses = [r["status"] for r in audit if r.get("route") == "/v1/embeddings"]
        assert statuses.count(200) == 2 and 503 in statuses
