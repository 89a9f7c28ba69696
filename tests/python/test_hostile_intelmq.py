"""Hostile input where a real IntelMQ bot is involved (issue 10; the Rust side is
tests/it/hostile_exchange.rs): silent sockets must not keep IntelMQ's real TCP output bot out of
sighthub's `[[intelmq.tcp_in]]` listener.

Before the listener had an idle timeout and per-address limits, 64 silent sockets held every
slot and the bot's events never arrived.
"""

import json
import socket

from test_intelmq_restapi import (  # noqa: F401  (fixtures are used by name)
    Redis, free_port, intelmq_root, redis_port, wait_for)
from test_intelmq_transports import Hub, bot_logs, by_seq, samples, setup_root, start_bot, stop_bots


def test_silent_sockets_cannot_keep_the_tcp_output_bot_out(tmp_path, intelmq_root, redis_port):
    port = free_port()
    hub = Hub(tmp_path, '[intelmq]\nenabled = true\n\n[[intelmq.tcp_in]]\nname = "bot"\n'
                        'listen = "127.0.0.1:%d"\n' % port)
    root = intelmq_root
    module = "intelmq.bots.outputs.tcp.output"
    venv = setup_root(root, redis_port, {"tcp-out": (module, {"ip": "127.0.0.1", "port": port}, None)})
    events = samples(200)
    r = Redis(redis_port)
    assert r.call("SELECT", "2") == "OK"
    for ev in events:
        r.call("LPUSH", "tcp-out-queue", json.dumps(dict(ev, __type="Event")))
    hub.start()
    silent = []
    procs = {}
    try:
        # More silent connections than the listener has slots (64), from the bot's own address
        # and from four others on the loopback network: none of them ever sends a byte.
        for source in ["127.0.0.1"] * 20 + [f"127.0.0.{i}" for i in range(2, 6) for _ in range(16)]:
            s = socket.socket()
            s.bind((source, 0))
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            silent.append(s)
        procs["tcp-out"] = start_bot(venv, root, "tcp-out", module)

        def drained():
            if procs["tcp-out"].poll() is not None:
                raise AssertionError("the TCP output bot exited:\n" + bot_logs(root))
            return r.call("LLEN", "tcp-out-queue") == 0 and r.call("LLEN", "tcp-out-queue-internal") == 0
        wait_for(drained, 90, "the bot to send every event past the silent sockets")
        log = hub.log()
    finally:
        stop_bots(procs)
        for s in silent:
            s.close()
        hub.stop()
    assert len(log) == len(events), f"{len(log)} messages, want {len(events)}\n{bot_logs(root)}"
    assert by_seq(m["payload"] for m in log) == by_seq(events)
