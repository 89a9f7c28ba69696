"""GET /metrics read by the `prometheus-client` Python package's OpenMetrics parser (what a
Prometheus scrape reads), against the real binary: every family documented in
docs/OPERATIONS.md is there and moves with what the server did."""

import re
import socket
import uuid
from pathlib import Path

import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families

DOC = Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url, key=None):
    headers = {"Authorization": key} if key else {}
    r = requests.get(url, headers=headers, verify=False, timeout=30)
    return r


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams, family, **labels):
    for s in fams[family].samples:
        if all(s.labels.get(k) == v for k, v in labels.items()) and not s.name.endswith(
            ("_bucket", "_created")
        ):
            if s.name.endswith("_count") or s.name.endswith("_sum"):
                continue
            return s.value
    raise AssertionError(f"no sample of {family} with {labels}: {fams[family].samples}")


def test_metrics_parse_and_count_what_happened(start_server):
    org = str(uuid.uuid4())
    open_port = free_port()
    srv = start_server(
        config=f'[exchange]\norg = "{org}"\n\n[metrics]\nlisten = "127.0.0.1:{open_port}"\n'
    )
    base = srv.url
    auth = {"Authorization": srv.key}
    for v in ("10.0.0.1", "10.0.0.2", "10.0.0.1"):
        r = requests.get(f"{base}/w/metrics/ip", params={"val": v}, headers=auth, verify=False)
        assert r.status_code == 200, r.text
    msg = {
        "format": "intelmq",
        "version": 1,
        "type": "event",
        "meta": {"uuid": str(uuid.uuid4()), "uuid_org": org},
        "payload": {"source.ip": "198.51.100.1", "raw": "eA=="},
    }
    for expected in ("accepted", "duplicate"):
        r = requests.post(f"{base}/iep04/messages", json=msg, headers=auth, verify=False)
        assert r.status_code == 200 and expected in r.text, r.text

    # With the admin key on the main listener; refused without it.
    assert scrape(f"{base}/metrics").status_code == 401
    r = scrape(f"{base}/metrics", srv.key)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    fams = families(r.text)

    assert value(fams, "sighthub_http_requests", route="/w/{namespace}", status="200") == 3
    assert value(fams, "sighthub_sightings_values", kind="public") >= 2
    assert value(fams, "sighthub_sightings_values", kind="distinct") >= 2
    assert value(fams, "sighthub_exchange_messages", outcome="accepted") == 1
    assert value(fams, "sighthub_exchange_messages", outcome="duplicate_uuid") == 1
    assert value(fams, "sighthub_exchange_head_seq") >= 1
    fsync = [s for s in fams["sighthub_commit_fsync_seconds"].samples if s.name.endswith("_count")]
    assert {s.labels["store"] for s in fsync} == {"sightings", "exchange"}
    assert all(s.value >= 1 for s in fsync), fsync
    assert value(fams, "sighthub_commit_poisoned", store="sightings") == 0
    # The engines' own activity, for both stores.
    for fam in ("sighthub_storage_memtable_bytes", "sighthub_storage_disk_bytes",
                "sighthub_storage_journals", "sighthub_storage_compactions"):
        stores = {s.labels["store"] for s in fams[fam].samples}
        assert stores == {"sightings", "exchange"}, (fam, stores)
    assert value(fams, "sighthub_storage_journals", store="exchange") >= 1

    # The same exposition without a key on the monitoring listener; nothing else there.
    r = scrape(f"http://127.0.0.1:{open_port}/metrics")
    assert r.status_code == 200
    assert "sighthub_http_request_duration_seconds" in families(r.text)
    assert scrape(f"http://127.0.0.1:{open_port}/w/x?val=1").status_code == 404

    # Every family exposed is documented in docs/OPERATIONS.md, and the other way round.
    documented = set(re.findall(r"`(sighthub_[a-z_]+)`", DOC.read_text()))
    exposed = set(fams)
    missing = exposed - documented
    assert not missing, f"undocumented families: {sorted(missing)}"
    for name in ("sighthub_relay_messages", "sighthub_relay_link_up", "sighthub_bridge_lag",
                 "sighthub_bridge_records", "sighthub_intelmq_messages",
                 "sighthub_exchange_consumer_lag"):
        assert name in documented, name
