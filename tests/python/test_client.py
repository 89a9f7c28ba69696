"""The real `sightingdb` 0.0.6 Python client against the real sighthub binary (HTTPS)."""

import json
import socket
import ssl
import time

import pytest
import requests
import sightingdb

NOW_SLACK = 60  # seconds between the client's "now" and the server's


def hour_buckets(t0, t1):
    """The stats bucket keys a sighting made between t0 and t1 may fall into."""
    return {str(int(t0) // 3600 * 3600), str(int(t1) // 3600 * 3600)}


def write_many(con, items):
    """Writes (namespace, value) pairs with the client and returns the parsed answer."""
    w = sightingdb.writer(con)
    for ns, value in items:
        w.add(ns, value)  # the client sends "timestamp": 0, which means "now" in sighthub
    text = w.commit()
    answer = json.loads(text)
    assert answer["message"] == "ok", text
    assert answer["written"] == len(items), text
    return answer


def test_write_then_fetch_counts_consensus_and_server_time(connection):
    t0 = time.time()
    answer = write_many(
        connection,
        [
            ("/test/a", "10.0.0.1"),  # the client strips the leading "/"
            ("test/a", "10.0.0.1"),
            ("test/b", "10.0.0.1"),
            ("test/a", "10.0.0.2"),
        ],
    )
    t1 = time.time()
    items = answer["items"]
    assert [(i["index"], i["namespace"], i["status"]) for i in items] == [
        (0, "test/a", "ok"),
        (1, "test/a", "ok"),
        (2, "test/b", "ok"),
        (3, "test/a", "ok"),
    ]
    assert [(i["count"], i["new"]) for i in items] == [(1, True), (2, False), (1, True), (1, True)]
    assert "errors" not in answer

    r = sightingdb.reader(connection)
    r.add("test/a", "10.0.0.1")
    r.add("test/b", "10.0.0.1")
    r.add("test/a", "10.0.0.2")
    r.add("test/a", "10.9.9.9")
    r.add("test/nope", "10.0.0.1")
    got = r.fetch()
    assert len(got) == 5
    a1, b1, a2, missing_value, missing_ns = got
    assert list(a1) == ["value", "first_seen", "last_seen", "count", "tags", "ttl", "consensus"]
    assert (a1["value"], a1["count"], a1["consensus"]) == ("10.0.0.1", 2, 2)
    assert (b1["value"], b1["count"], b1["consensus"]) == ("10.0.0.1", 1, 2)
    assert (a2["value"], a2["count"], a2["consensus"]) == ("10.0.0.2", 1, 1)
    for view in (a1, b1, a2):
        assert view["tags"] == "" and view["ttl"] == 0
        # timestamp 0 from the client means server time, not the epoch
        assert view["first_seen"] != 0
        assert t0 - NOW_SLACK <= view["first_seen"] <= view["last_seen"] <= t1 + NOW_SLACK, view
    assert missing_value == {"error": "Value not found", "namespace": "test/a", "value": "10.9.9.9"}
    assert missing_ns == {"error": "Path not found", "namespace": "test/nope", "value": "10.0.0.1"}
    # fetch() empties the client's queue
    assert r.items["items"] == []

    # read_one goes through /rb too
    one = sightingdb.reader(connection).read_one("test/b", "10.0.0.1")
    assert (one["count"], one["consensus"]) == (1, 2)


def test_fetch_with_stats(connection):
    t0 = time.time()
    write_many(connection, [("stats/ns", "evil.example")] * 3 + [("stats/other", "evil.example")])
    t1 = time.time()

    r = sightingdb.reader(connection)
    r.add("stats/ns", "evil.example")
    r.add("stats/other", "evil.example")
    r.add("stats/ns", "absent.example")
    got = r.fetch_with_stats()
    assert len(got) == 3
    main, other, missing = got
    assert list(main) == [
        "value", "first_seen", "last_seen", "count", "tags", "ttl", "consensus", "stats",
    ]
    assert (main["count"], main["consensus"]) == (3, 2)
    assert (other["count"], other["consensus"]) == (1, 2)
    for view in (main, other):
        stats = view["stats"]
        assert isinstance(stats, dict) and stats, view
        assert set(stats) <= hour_buckets(t0, t1), (stats, t0, t1)
        assert all(isinstance(n, int) for n in stats.values())
        assert sum(stats.values()) == view["count"]
        assert [int(k) for k in stats] == sorted(int(k) for k in stats)
        assert view["first_seen"] >= int(next(iter(stats)))
    assert missing == {"error": "Value not found", "namespace": "stats/ns", "value": "absent.example"}

    one = sightingdb.reader(connection).read_one_with_stats("stats/other", "evil.example")
    assert sum(one["stats"].values()) == 1

    # plain /rb carries no stats
    plain = sightingdb.reader(connection).read_one("stats/ns", "evil.example")
    assert "stats" not in plain


def test_delete_removes_the_namespace_and_gives_consensus_back(server, connection):
    write_many(
        connection,
        [("del/gone", "198.51.100.7"), ("del/gone", "only-here"), ("del/kept", "198.51.100.7")],
    )
    before = sightingdb.reader(connection).read_one("del/kept", "198.51.100.7")
    assert before["consensus"] == 2

    assert sightingdb.delete(connection).delete("del/gone") is True

    # the client sees the namespace gone ...
    r = sightingdb.reader(connection)
    r.add("del/gone", "198.51.100.7")
    r.add("del/gone", "only-here")
    r.add("del/kept", "198.51.100.7")
    gone1, gone2, kept = r.fetch()
    assert gone1 == {"error": "Path not found", "namespace": "del/gone", "value": "198.51.100.7"}
    assert gone2 == {"error": "Path not found", "namespace": "del/gone", "value": "only-here"}
    # ... while the other namespace keeps its value, with the consensus given back
    assert (kept["value"], kept["count"], kept["consensus"]) == ("198.51.100.7", 1, 1)

    # and so does a raw HTTP client
    headers = {"Authorization": server.key}
    resp = requests.get(
        f"{server.url}/r/del/gone", params={"val": "198.51.100.7", "noshadow": ""},
        headers=headers, verify=False, timeout=10,
    )
    assert resp.status_code == 404, resp.text
    assert resp.json() == {"error": "Path not found", "namespace": "del/gone", "value": "198.51.100.7"}
    resp = requests.get(f"{server.url}/r/del/gone", headers=headers, verify=False, timeout=10)
    assert resp.status_code == 404, resp.text
    assert resp.json() == {"error": "Path not found", "namespace": "del/gone", "value": ""}
    resp = requests.get(f"{server.url}/r/del/kept", headers=headers, verify=False, timeout=10)
    assert resp.status_code == 200, resp.text
    assert [v["value"] for v in resp.json()["attributes"]] == ["198.51.100.7"]
    resp = requests.get(
        f"{server.url}/r/_all", params={"val": "only-here", "noshadow": ""},
        headers=headers, verify=False, timeout=10,
    )
    assert resp.status_code == 404, f"only-here should have left _all: {resp.text}"

    # deleting it again: 404, which the client reports as False
    assert sightingdb.delete(connection).delete("del/gone") is False
    resp = requests.get(f"{server.url}/d/del/gone", headers=headers, verify=False, timeout=10)
    assert resp.status_code == 404, resp.text
    assert resp.json() == {"error": "Path not found", "namespace": "del/gone", "value": ""}


def test_wrong_key_is_refused(server, connection):
    write_many(connection, [("keys/ns", "v1")])

    bad = sightingdb.connection(host="127.0.0.1", port=server.port, apikey="not-" + server.key)
    bad.disable_ssl_warnings()

    text = sightingdb.writer(bad).write_one("keys/ns", "v2")
    assert json.loads(text) == {"message": "API key is not permitted to write this namespace."}
    with pytest.raises(KeyError):  # the client indexes ["items"] of the refusal body
        sightingdb.reader(bad).read_one("keys/ns", "v1")
    with pytest.raises(KeyError):
        sightingdb.reader(bad).read_one_with_stats("keys/ns", "v1")
    assert sightingdb.delete(bad).delete("keys/ns") is False

    # the statuses behind those failures
    for method, path, kwargs in [
        ("POST", "/wb", {"json": {"items": [{"namespace": "keys/ns", "value": "v2", "timestamp": 0}]}}),
        ("POST", "/rb", {"json": {"items": [{"namespace": "keys/ns", "value": "v1"}]}}),
        ("POST", "/d/keys/ns", {}),
        ("GET", "/r/keys/ns?val=v1", {}),
    ]:
        resp = requests.request(
            method, server.url + path, headers={"Authorization": "not-" + server.key},
            verify=False, timeout=10, **kwargs,
        )
        assert resp.status_code == 403, (method, path, resp.status_code, resp.text)
        assert resp.json()["message"].startswith("API key is not permitted to"), resp.text
    resp = requests.post(
        server.url + "/wb", json={"items": []}, verify=False, timeout=10
    )
    assert resp.status_code == 401, resp.text
    assert resp.json() == {"message": "Please add the API key in the Authorization headers."}

    # nothing was written or deleted by the refused calls
    got = sightingdb.reader(connection).read_one("keys/ns", "v1")
    assert (got["count"], got["consensus"]) == (1, 1)
    missing = sightingdb.reader(connection).read_one("keys/ns", "v2")
    assert missing["error"] == "Value not found"


@pytest.mark.parametrize(
    "version, name",
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
)
def test_tls_handshake(server, version, name):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = version
    ctx.maximum_version = version
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == name
            tls.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := tls.recv(65536):
                reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body)["status"] == "ok"


def test_self_signed_certificate_verifies_for_localhost(server):
    ctx = ssl.create_default_context(cafile=str(server.data_dir / "tls" / "cert.pem"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_values_survive_a_restart(start_server):
    first = start_server()
    con = sightingdb.connection(host="127.0.0.1", port=first.port, apikey=first.key)
    con.disable_ssl_warnings()
    write_many(con, [("restart/ns", "v")] * 2)
    assert first.stop() == 0, first.log()

    second = start_server(data_dir=first.data_dir, key=first.key)
    con = sightingdb.connection(host="127.0.0.1", port=second.port, apikey=second.key)
    con.disable_ssl_warnings()
    got = sightingdb.reader(con).read_one("restart/ns", "v")
    assert (got["value"], got["count"], got["consensus"]) == ("v", 2, 1), got


def test_sigterm_right_after_start_exits_cleanly(start_server, tmp_path):
    """SIGTERM as soon as the server says it is listening must still be a clean stop (exit 0,
    store persisted), not death by the signal's default action."""
    data_dir = tmp_path / "early-stop"
    codes = []
    for _ in range(30):
        srv = start_server(data_dir=data_dir)
        codes.append(srv.stop())
    assert codes == [0] * len(codes), f"exit codes after an early SIGTERM: {codes}"


def test_openapi_document_is_served_without_a_key(server):
    resp = requests.get(f"{server.url}/_api/openapi.yaml", verify=False, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/yaml")
    lines = resp.text.splitlines()
    assert lines[0] == "openapi: 3.0.3"
    version = requests.get(f"{server.url}/health", verify=False, timeout=10).json()["version"]
    assert f'  version: "{version}"' in lines, "info.version must be the running version"
    for path in ("/w/{namespace}", "/r/{namespace}", "/wb", "/rb", "/d/{namespace}", "/c/{namespace}"):
        assert f"  {path}:" in lines, path
