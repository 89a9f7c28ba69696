"""The DNS blocklist front end ([dns]) read with dnspython, against the real sighthub binary.

The server writes sightings over its HTTP API and answers DNSBL lookups over UDP and TCP on
127.0.0.1 (a port of its own choosing, read from its log line `dns listening on udp+tcp ...`).
"""

import base64
import re
import socket
import struct
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest
import requests

ZONE = "bl.test"
DNS_LISTENING = re.compile(r"dns listening on udp\+tcp 127\.0\.0\.1:(\d+)")
TIMEOUT = 5


def config(**extra):
    lines = [
        "[dns]",
        'listen = "127.0.0.1:0"',
        f'zone = "{ZONE}"',
    ]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    lines += ["[dns.zones]", 'ip = "feeds/ipv4"', 'dom = "feeds/dom"', 'ip6 = "feeds/ipv6"']
    return "\n".join(lines) + "\n"


def dns_port(srv):
    for line in srv.lines:
        m = DNS_LISTENING.search(line)
        if m:
            return int(m.group(1))
    pytest.fail(f"no `dns listening on` line; stderr:\n{srv.log()}")


def sight(srv, ns, value, times=1):
    for _ in range(times):
        r = requests.get(
            f"{srv.url}/w/{ns}",
            params={"val": value},
            headers={"Authorization": srv.key},
            verify=False,
            timeout=10,
        )
        assert r.status_code == 200, r.text


def b32(value):
    text = base64.b32encode(value.encode()).decode().rstrip("=").lower()
    return ".".join(["_b32"] + [text[i : i + 63] for i in range(0, len(text), 63)])


def ask(port, name, rdtype, proto):
    q = dns.message.make_query(name, rdtype)
    send = dns.query.udp if proto == "udp" else dns.query.tcp
    return send(q, "127.0.0.1", port=port, timeout=TIMEOUT)


@pytest.fixture
def blocklist(start_server):
    srv = start_server(config=config())
    sight(srv, "feeds/ipv4", "1.2.3.4", times=12)
    sight(srv, "feeds/dom", "1.2.3.4")  # consensus 2 for 1.2.3.4
    sight(srv, "feeds/dom", "evil.example.com")
    sight(srv, "feeds/dom", "https://evil.example.com/x?y=1")
    sight(srv, "feeds/ipv6", "2001:db8::1")
    return srv, dns_port(srv)


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_a_txt_nxdomain_and_refused(blocklist, proto):
    srv, port = blocklist
    r = ask(port, f"4.3.2.1.ip.{ZONE}", "A", proto)
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.AA
    assert [rr.address for rr in r.answer[0]] == ["127.0.0.3"], "12 sightings: 10-99"

    r = ask(port, f"4.3.2.1.ip.{ZONE}", "TXT", proto)
    (txt,) = [b"".join(rr.strings).decode() for rr in r.answer[0]]
    assert re.fullmatch(
        r"count=12 first_seen=\S+Z last_seen=\S+Z consensus=2", txt
    ), txt

    r = ask(port, f"Evil.Example.COM.dom.{ZONE}", "A", proto)
    assert [rr.address for rr in r.answer[0]] == ["127.0.0.2"]

    r = ask(port, f"{b32('https://evil.example.com/x?y=1')}.dom.{ZONE}", "A", proto)
    assert [rr.address for rr in r.answer[0]] == ["127.0.0.2"]

    nibbles = dns.reversename.from_address("2001:db8::1").to_text().removesuffix("ip6.arpa.")
    r = ask(port, f"{nibbles}ip6.{ZONE}", "A", proto)
    assert [rr.address for rr in r.answer[0]] == ["127.0.0.2"]

    for unseen in [f"5.3.2.1.ip.{ZONE}", f"4.3.2.1.nolabel.{ZONE}", f"1.1.1.1.dom.{ZONE}"]:
        r = ask(port, unseen, "A", proto)
        assert r.rcode() == dns.rcode.NXDOMAIN, unseen
        assert not r.answer
        assert r.authority and r.authority[0].rdtype == dns.rdatatype.SOA

    r = ask(port, "4.3.2.1.ip.example.org", "A", proto)
    assert r.rcode() == dns.rcode.REFUSED

    r = ask(port, f"4.3.2.1.ip.{ZONE}", "MX", proto)
    assert r.rcode() == dns.rcode.NOERROR and not r.answer


def test_lookups_are_not_shadow_sightings_unless_configured(start_server):
    for shadow, expect in [("false", 404), ("true", 200)]:
        srv = start_server(config=config(shadow=shadow))
        sight(srv, "feeds/ipv4", "1.2.3.4")
        ask(dns_port(srv), f"4.3.2.1.ip.{ZONE}", "A", "udp")
        r = requests.get(
            f"{srv.url}/r/_shadow/feeds/ipv4",
            params={"val": "1.2.3.4", "noshadow": "true"},
            headers={"Authorization": srv.key},
            verify=False,
            timeout=10,
        )
        assert r.status_code == expect, (shadow, r.text)


def test_rate_limit_drops_udp_and_refuses_tcp(start_server):
    srv = start_server(config=config(rate_limit_per_second=1))
    sight(srv, "feeds/ipv4", "1.2.3.4")
    port = dns_port(srv)
    name = f"4.3.2.1.ip.{ZONE}"
    answered = dropped = 0
    for _ in range(20):
        try:
            ask_short = dns.query.udp(
                dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=0.2
            )
            assert ask_short.rcode() == dns.rcode.NOERROR
            answered += 1
        except dns.exception.Timeout:
            dropped += 1
    assert answered >= 1 and dropped >= 1, (answered, dropped)

    # Over TCP the client is told: REFUSED, on the same connection.
    rcodes = []
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        for _ in range(10):
            dns.query.send_tcp(s, dns.message.make_query(name, "A"))
            r, _ = dns.query.receive_tcp(s, expiration=None)
            rcodes.append(r.rcode())
    assert dns.rcode.REFUSED in rcodes, rcodes

    # Every query over the limit is counted where an operator sees it: GET /metrics.
    import requests
    text = requests.get(f"{srv.url}/metrics", headers={"Authorization": srv.key},
                        verify=False, timeout=10).text
    over = [l for l in text.splitlines()
            if l.startswith('sighthub_worker_records_total{worker="dns",outcome="over_rate"}')]
    refused = sum(1 for r in rcodes if r == dns.rcode.REFUSED)
    # (a UDP timeout is a drop over the limit unless the machine was too slow to answer)
    assert over and refused + 1 <= float(over[0].split()[-1]) <= dropped + refused, (
        over, dropped, refused)


def raw_udp(port, payload):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.sendto(payload, ("127.0.0.1", port))
        return s.recv(4096)


def test_hostile_queries_get_formerr_or_are_dropped_without_stalling_others(blocklist):
    srv, port = blocklist
    good = dns.message.make_query(f"4.3.2.1.ip.{ZONE}", "A")
    wire = good.to_wire()

    # A slow TCP client holding a connection open with half a length prefix.
    slow = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    slow.sendall(b"\x00")

    # Many questions declared in the header: FORMERR, decided before the body is read.
    many = wire[:4] + struct.pack(">H", 500) + wire[6:]
    answer = raw_udp(port, many)
    assert answer[:2] == wire[:2] and answer[3] & 0x0F == dns.rcode.FORMERR

    # A truncated body and a compression loop: FORMERR.
    for bad in [wire[:-3], wire[:12] + b"\xc0\x0c\x00\x01\x00\x01"]:
        answer = raw_udp(port, bad)
        assert answer[3] & 0x0F == dns.rcode.FORMERR, bad

    # A name of more than 255 bytes: FORMERR.
    long_name = b"".join(b"\x3f" + b"a" * 63 for _ in range(5)) + b"\x00"
    answer = raw_udp(port, wire[:12] + long_name + b"\x00\x01\x00\x01")
    assert answer[3] & 0x0F == dns.rcode.FORMERR

    # An oversized datagram: FORMERR.
    answer = raw_udp(port, wire + b"\x00" * 2000)
    assert answer[3] & 0x0F == dns.rcode.FORMERR

    # Garbage shorter than a header: dropped, no answer.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        s.sendto(b"\x01\x02\x03", ("127.0.0.1", port))
        with pytest.raises(socket.timeout):
            s.recv(4096)

    # A huge TCP length: the connection is closed without reading 64 KiB.
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(b"\xff\xff" + b"\x00" * 100)
        try:
            assert s.recv(10) == b"", "closed, nothing answered"
        except ConnectionResetError:
            pass  # closed with our bytes unread: a reset

    # Meanwhile the slow client stalled no one: a good query over UDP and over TCP.
    for proto in ["udp", "tcp"]:
        r = ask(port, f"4.3.2.1.ip.{ZONE}", "A", proto)
        assert [rr.address for rr in r.answer[0]] == ["127.0.0.3"], proto

    # One address holds at most max_tcp_connections_per_address (8) connections: with the slow
    # one and 7 more open, the next is closed at once; UDP is still answered.
    held = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) for _ in range(7)]
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as extra:
        try:
            assert extra.recv(10) == b"", "the ninth connection is closed"
        except ConnectionResetError:
            pass
    r = ask(port, f"4.3.2.1.ip.{ZONE}", "A", "udp")
    assert r.rcode() == dns.rcode.NOERROR
    for s in held:
        s.close()
    slow.close()
    # Once they are closed, TCP serves again (the server notices the closes in its own time).
    r = None
    for _ in range(100):
        try:
            r = ask(port, f"4.3.2.1.ip.{ZONE}", "A", "tcp")
            break
        except (ConnectionError, EOFError, dns.exception.DNSException):
            time.sleep(0.1)
    assert r is not None and r.rcode() == dns.rcode.NOERROR
