"""Issue 6 end to end: the real IntelMQ 3.5 TCP output bot feeds events into sighthub's
`[[intelmq.tcp_in]]` listener; the bridge records their observables as sightings; the real
`sightingdb` 0.0.6 client reads them back over HTTPS through the SightingDB API."""

import calendar
import json
import time

import sightingdb

from test_intelmq_restapi import (  # noqa: F401  (fixtures are used by name)
    Redis, free_port, intelmq_root, intelmq_venv, redis_port, wait_for)
from test_intelmq_transports import bot_logs, samples, setup_root, start_bot, stop_bots

ORG = "5a1e0c3d-7b2f-4c1e-9a8d-6f0b3c2d1e4a"


def test_tcp_output_bot_events_become_sightings_read_by_the_python_client(
        start_server, intelmq_root, redis_port):
    port = free_port()
    srv = start_server(config=(
        '[exchange]\norg = "%s"\n\n[intelmq]\nenabled = true\n\n'
        '[[intelmq.tcp_in]]\nname = "bot"\nlisten = "127.0.0.1:%d"\n' % (ORG, port)))
    root = intelmq_root
    module = "intelmq.bots.outputs.tcp.output"
    venv = setup_root(root, redis_port, {"tcp-out": (module, {"ip": "127.0.0.1", "port": port}, None)})
    events = samples(50)
    # The same event sent twice by the bot (it resends after a timeout): counted once.
    events.append(dict(events[0]))
    r = Redis(redis_port)
    assert r.call("SELECT", "2") == "OK"
    for ev in events:
        r.call("LPUSH", "tcp-out-queue", json.dumps(dict(ev, __type="Event")))
    procs = {"tcp-out": start_bot(venv, root, "tcp-out", module)}
    try:
        def drained():
            if procs["tcp-out"].poll() is not None:
                raise AssertionError("the TCP output bot exited:\n" + bot_logs(root))
            return r.call("LLEN", "tcp-out-queue") == 0 and r.call("LLEN", "tcp-out-queue-internal") == 0
        wait_for(drained, 120, "the bot to send every event")
    finally:
        stop_bots(procs)

    con = sightingdb.connection(host="127.0.0.1", port=srv.port, apikey=srv.key)

    def ns(ev, field):
        # The default template: iep04/{org}/{feed.name, "/" → "-"}/{field}
        return "iep04/%s/%s/%s" % (ORG, ev["feed.name"].replace("/", "-").strip(), field)

    fqdn_counts = {}
    for ev in events[:50]:
        if "destination.fqdn" in ev:
            key = (ns(ev, "destination.fqdn"), ev["destination.fqdn"])
            fqdn_counts[key] = fqdn_counts.get(key, 0) + 1
    assert fqdn_counts, "the samples name destination FQDNs"

    def read_all():
        rd = sightingdb.reader(con)
        for ev in events[:50]:
            rd.add(ns(ev, "source.ip"), ev["source.ip"])
        for namespace, fqdn in fqdn_counts:
            rd.add(namespace, fqdn)
        return rd.fetch()

    deadline = time.monotonic() + 30
    got = read_all()
    while any("error" in v for v in got) and time.monotonic() < deadline:
        time.sleep(0.2)
        got = read_all()
    missing = [v for v in got if "error" in v]
    assert not missing, missing[:3]
    ips, fqdns = got[:50], got[50:]
    # Every source.ip appears once in the 50 events (the resent copy was a duplicate).
    assert [v["value"] for v in ips] == [ev["source.ip"] for ev in events[:50]]
    assert all(v["count"] == 1 and v["consensus"] == 1 for v in ips), ips[:3]
    # The event's time.source is the sighting time; classification and TLP are tags.
    t0 = events[0]["time.source"]
    assert t0.endswith("+00:00"), t0
    assert ips[0]["first_seen"] == calendar.timegm(time.strptime(t0[:19], "%Y-%m-%dT%H:%M:%S"))
    assert "taxonomy:%s" % events[0]["classification.taxonomy"] in ips[0]["tags"]
    assert "tlp:amber" in ips[0]["tags"]
    # A destination FQDN named by several events is one value counted once per event.
    assert [v["count"] for v in fqdns] == list(fqdn_counts.values())
    # And through the stats read of the client.
    rs = sightingdb.reader(con)
    rs.add(ns(events[0], "source.ip"), events[0]["source.ip"])
    stats = rs.fetch_with_stats()[0]["stats"]
    assert sum(stats.values()) == 1
