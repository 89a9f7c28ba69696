//! From a query packet to the answer packet: the zone, the namespace labels, the value
//! encodings ([`crate::encoding`]), the store's one read path, and the answer mapping.
//!
//! | query | answer |
//! |---|---|
//! | fewer than 12 bytes, or a response (QR set) | nothing (dropped: no id to answer, or never answer an answer) |
//! | more than 1024 bytes ([`crate::server::MAX_QUERY_LEN`]) | FORMERR |
//! | an opcode other than QUERY | NOTIMP |
//! | EDNS of a version other than 0 | BADVERS (RFC 6891) |
//! | not exactly one question, any answer or authority record, more than one additional (the OPT) | FORMERR (decoded from the header alone, before the body) |
//! | a body that does not decode (bad names, compression loops, truncated) | FORMERR |
//! | a class other than IN, a name outside the zone, AXFR/IXFR | REFUSED |
//! | the zone or `<label>.<zone>` | NOERROR, no answer (SOA for SOA/ANY) |
//! | an unconfigured label, labels that are not a value, a value not stored | NXDOMAIN |
//! | a stored value, A | `127.0.0.x`, x = 2 + ⌊log10(count)⌋: .2 for 1–9 sightings, .3 for 10–99, … (at most .21: a count is a u64) |
//! | a stored value, TXT | `count=… first_seen=… last_seen=… consensus=…` (times RFC 3339, UTC) |
//! | a stored value, ANY | both |
//! | a stored value, any other type | NOERROR, no answer (as DNSBLs do) |
//! | the store fails | SERVFAIL |
//!
//! Every negative answer (NXDOMAIN, no data) carries the zone's SOA in the authority section,
//! whose minimum is the TTL, so resolvers cache it (RFC 2308). Answers are authoritative (AA).
//! A UDP answer longer than the client's limit (512 bytes, or its EDNS size up to 1232) is sent
//! truncated (TC), so the client retries over TCP.

use crate::config::Zones;
use crate::encoding;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use sighthub_store::{Namespace, ReadOutcome, SightingStore, View};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Largest UDP answer offered to an EDNS client (the DNS flag day 2020 value).
pub const EDNS_UDP_PAYLOAD: u16 = 1232;

/// The A record for a value seen `count` times (at least once).
pub fn a_for_count(count: u64) -> Ipv4Addr {
    let digits = count.max(1).ilog10() as u8;
    Ipv4Addr::new(127, 0, 0, 2 + digits)
}

/// The TXT text of a value.
pub fn txt_for(view: &View) -> String {
    format!(
        "count={} first_seen={} last_seen={} consensus={}",
        view.record.count,
        rfc3339(view.record.first_seen),
        rfc3339(view.record.last_seen),
        view.consensus
    )
}

fn rfc3339(ts: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ts.to_string())
}

/// Answers queries for one zone from a sighting store.
pub struct Responder {
    zones: Zones,
    store: Arc<dyn SightingStore>,
    ttl: u32,
    shadow: bool,
}

/// What a UDP or TCP front end does with a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes back.
    Send(Vec<u8>),
    /// Send nothing.
    Drop,
}

/// The fixed header fields read before the body is decoded.
struct RawHeader {
    id: u16,
    opcode: u8,
    rd: bool,
    qd: u16,
    an: u16,
    ns: u16,
    ar: u16,
}

impl RawHeader {
    fn read(p: &[u8]) -> Option<Self> {
        let b = |i: usize| p.get(i).copied();
        let w = |i: usize| Some(u16::from_be_bytes([b(i)?, b(i + 1)?]));
        let flags = b(2)?;
        if flags & 0x80 != 0 {
            return None; // a response
        }
        Some(Self {
            id: w(0)?,
            opcode: (flags >> 3) & 0x0f,
            rd: flags & 0x01 != 0,
            qd: w(4)?,
            an: w(6)?,
            ns: w(8)?,
            ar: w(10)?,
        })
    }

    /// A header-only answer with `rcode` (no question section).
    fn error(&self, rcode: ResponseCode) -> Vec<u8> {
        let [i0, i1] = self.id.to_be_bytes();
        let flags = 0x80 | (self.opcode << 3) | u8::from(self.rd);
        let rcode = (u16::from(rcode) & 0x0f) as u8;
        vec![i0, i1, flags, rcode, 0, 0, 0, 0, 0, 0, 0, 0]
    }
}

impl Responder {
    /// A responder for `zones` reading `store`; answers live `ttl` seconds; `shadow` records
    /// every lookup of a value as a shadow sighting (`_shadow/<ns>`), like an HTTP read.
    pub fn new(zones: Zones, store: Arc<dyn SightingStore>, ttl: u32, shadow: bool) -> Self {
        Self {
            zones,
            store,
            ttl,
            shadow,
        }
    }

    /// REFUSED for `packet` without looking at its body (over the rate limit on TCP); nothing
    /// for a packet without a header or a response.
    pub fn refused(&self, packet: &[u8]) -> Reply {
        match RawHeader::read(packet) {
            Some(h) => Reply::Send(h.error(ResponseCode::Refused)),
            None => Reply::Drop,
        }
    }

    /// The answer to one query packet. `udp` is true for UDP (answers may be truncated);
    /// `now` is the clock (unix seconds). May block on a store read.
    pub fn respond(&self, packet: &[u8], udp: bool, now: i64) -> Reply {
        let Some(h) = RawHeader::read(packet) else {
            return Reply::Drop;
        };
        if packet.len() > crate::server::MAX_QUERY_LEN {
            return Reply::Send(h.error(ResponseCode::FormErr));
        }
        if h.opcode != 0 {
            return Reply::Send(h.error(ResponseCode::NotImp));
        }
        if h.qd != 1 || h.an != 0 || h.ns != 0 || h.ar > 1 {
            return Reply::Send(h.error(ResponseCode::FormErr));
        }
        let Ok(req) = Message::from_vec(packet) else {
            return Reply::Send(h.error(ResponseCode::FormErr));
        };
        let Some(query) = req.queries.first().cloned() else {
            return Reply::Send(h.error(ResponseCode::FormErr));
        };
        let mut resp = Message::response(h.id, OpCode::Query);
        resp.metadata.recursion_desired = h.rd;
        resp.add_query(query.clone());
        let client_limit = match &req.edns {
            Some(e) => {
                let mut edns = Edns::new();
                edns.set_max_payload(EDNS_UDP_PAYLOAD);
                resp.set_edns(edns);
                usize::from(e.max_payload().clamp(512, EDNS_UDP_PAYLOAD))
            }
            None => 512,
        };
        if req.edns.as_ref().is_some_and(|e| e.version() > 0) {
            // RFC 6891 6.1.3: only EDNS version 0 is implemented.
            resp.metadata.response_code = ResponseCode::BADVERS;
        } else {
            self.fill(
                &mut resp,
                query.name(),
                query.query_type(),
                query.query_class(),
                now,
            );
        }
        let bytes = match resp.to_vec() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "dns: answer could not be encoded");
                return Reply::Send(h.error(ResponseCode::ServFail));
            }
        };
        if udp && bytes.len() > client_limit {
            let mut t = resp.truncate();
            t.metadata.message_type = MessageType::Response;
            return match t.to_vec() {
                Ok(b) => Reply::Send(b),
                Err(_) => Reply::Send(h.error(ResponseCode::ServFail)),
            };
        }
        Reply::Send(bytes)
    }

    fn fill(&self, resp: &mut Message, name: &Name, qtype: RecordType, class: DNSClass, now: i64) {
        let refuse = |resp: &mut Message| resp.metadata.response_code = ResponseCode::Refused;
        if class != DNSClass::IN && class != DNSClass::ANY {
            return refuse(resp);
        }
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return refuse(resp);
        }
        let labels: Vec<&[u8]> = name.iter().collect();
        let Some(rest) = self.zones.strip_zone(&labels) else {
            return refuse(resp);
        };
        resp.metadata.authoritative = true;
        let Some((ns_label, value_labels)) = rest.split_last() else {
            // The zone apex: the one name with a SOA.
            return self.no_data(resp, matches!(qtype, RecordType::SOA | RecordType::ANY));
        };
        let Some(ns) = self.zones.namespace(ns_label) else {
            return self.nx(resp);
        };
        if value_labels.is_empty() {
            return self.no_data(resp, false);
        }
        let Ok((_, value)) = encoding::decode(value_labels) else {
            return self.nx(resp);
        };
        match self.read(ns, &value, now) {
            Ok(ReadOutcome::Found(view)) => {
                let a = || {
                    Record::from_rdata(
                        name.clone(),
                        self.ttl,
                        RData::A(A(a_for_count(view.record.count))),
                    )
                };
                let txt = || {
                    Record::from_rdata(
                        name.clone(),
                        self.ttl,
                        RData::TXT(TXT::new(vec![txt_for(&view)])),
                    )
                };
                match qtype {
                    RecordType::A => {
                        resp.add_answer(a());
                    }
                    RecordType::TXT => {
                        resp.add_answer(txt());
                    }
                    RecordType::ANY => {
                        resp.add_answer(a());
                        resp.add_answer(txt());
                    }
                    _ => self.no_data(resp, false),
                }
            }
            Ok(ReadOutcome::NoValue | ReadOutcome::NoNamespace) => self.nx(resp),
            Err(e) => {
                tracing::warn!(namespace = %ns, error = %e, "dns: the store failed a read");
                resp.metadata.response_code = ResponseCode::ServFail;
            }
        }
    }

    /// The store's one read path, plus the shadow sighting when configured.
    fn read(&self, ns: &Namespace, value: &str, now: i64) -> sighthub_store::Result<ReadOutcome> {
        let out = self.store.read(ns, value, now)?;
        if self.shadow {
            if let Err(e) = self.store.shadow(&[(ns, value)], now) {
                tracing::warn!(namespace = %ns, error = %e, "dns: shadow sighting not recorded");
            }
        }
        Ok(out)
    }

    fn soa(&self) -> Record {
        let zone = self.zones.zone().clone();
        let mname = Name::from_ascii("ns")
            .and_then(|n| n.append_domain(&zone))
            .unwrap_or_else(|_| zone.clone());
        let rname = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(&zone))
            .unwrap_or_else(|_| zone.clone());
        let soa = SOA::new(mname, rname, 1, 3600, 600, 86_400, self.ttl);
        Record::from_rdata(zone, self.ttl, RData::SOA(soa))
    }

    fn nx(&self, resp: &mut Message) {
        resp.metadata.response_code = ResponseCode::NXDomain;
        resp.add_authority(self.soa());
    }

    /// NOERROR without the asked type: the SOA as the answer (`soa_answer`, at the apex) or
    /// in the authority section (negative caching).
    fn no_data(&self, resp: &mut Message, soa_answer: bool) {
        if soa_answer {
            resp.add_answer(self.soa());
        } else {
            resp.add_authority(self.soa());
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::DnsConfig;
    use hickory_proto::op::Query;
    use sighthub_store::{MemEngine, Sightings, StoreOptions, WriteOp};

    const NOW: i64 = 1_700_000_000;

    fn responder(shadow: bool) -> (Responder, Arc<Sightings<MemEngine>>) {
        let store =
            Arc::new(Sightings::new(MemEngine::new(), StoreOptions::default()).expect("mem store"));
        let mut cfg = DnsConfig {
            zone: "bl.example.org".into(),
            ..DnsConfig::default()
        };
        cfg.zones.insert("ip".into(), "feeds/ipv4".into());
        cfg.zones.insert("dom".into(), "feeds/domain".into());
        let zones = cfg.build_zones().expect("valid");
        let dyn_store: Arc<dyn SightingStore> = store.clone();
        (Responder::new(zones, dyn_store, 60, shadow), store)
    }

    fn sight(store: &Sightings<MemEngine>, ns: &str, value: &str, times: usize) {
        let ns = Namespace::parse(ns).expect("ns");
        let ops: Vec<WriteOp<'_>> = (0..times).map(|_| WriteOp::new(&ns, value, NOW)).collect();
        let (_, _durable_at_once) = store.write(&ops, NOW).expect("write");
    }

    fn ask(r: &Responder, name: &str, t: RecordType) -> Message {
        let mut q = Message::query();
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
        match r.respond(&q.to_vec().expect("encodes"), true, NOW) {
            Reply::Send(b) => Message::from_vec(&b).expect("answer decodes"),
            Reply::Drop => panic!("dropped"),
        }
    }

    fn a_of(m: &Message) -> Vec<Ipv4Addr> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_is_the_order_of_magnitude_of_the_count() {
        assert_eq!(a_for_count(1), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(a_for_count(9), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(a_for_count(10), Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(a_for_count(99), Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(a_for_count(100), Ipv4Addr::new(127, 0, 0, 4));
        assert_eq!(a_for_count(u64::MAX), Ipv4Addr::new(127, 0, 0, 21));
    }

    #[test]
    fn a_txt_nxdomain_and_refused() {
        let (r, store) = responder(false);
        sight(&store, "feeds/ipv4", "1.2.3.4", 12);
        sight(&store, "feeds/domain", "evil.example.com", 1);
        sight(&store, "other", "1.2.3.4", 1);

        let m = ask(&r, "4.3.2.1.ip.bl.example.org.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(a_of(&m), vec![Ipv4Addr::new(127, 0, 0, 3)]);
        assert_eq!(m.answers[0].ttl, 60);

        let m = ask(&r, "4.3.2.1.IP.BL.example.org.", RecordType::TXT);
        let txt = match &m.answers[0].data {
            RData::TXT(t) => t.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            txt,
            "count=12 first_seen=2023-11-14T22:13:20Z last_seen=2023-11-14T22:13:20Z consensus=2"
        );

        let m = ask(&r, "Evil.Example.com.dom.bl.example.org.", RecordType::ANY);
        assert_eq!(a_of(&m), vec![Ipv4Addr::new(127, 0, 0, 2)]);
        assert_eq!(m.answers.len(), 2);

        for unseen in [
            "5.3.2.1.ip.bl.example.org.",
            "4.3.2.1.nolabel.bl.example.org.",
            "4.3.2.1.dom.bl.example.org.",
            "_b32.zz.ip.bl.example.org.",
        ] {
            let m = ask(&r, unseen, RecordType::A);
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{unseen}");
            assert!(m.answers.is_empty());
            assert!(
                matches!(m.authorities[0].data, RData::SOA(_)),
                "negative caching"
            );
        }
        let m = ask(&r, "4.3.2.1.ip.example.org.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.authoritative);
    }

    #[test]
    fn other_types_and_the_apex_are_empty_answers() {
        let (r, store) = responder(false);
        sight(&store, "feeds/ipv4", "1.2.3.4", 1);
        let m = ask(&r, "4.3.2.1.ip.bl.example.org.", RecordType::AAAA);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        let m = ask(&r, "bl.example.org.", RecordType::SOA);
        assert!(matches!(m.answers[0].data, RData::SOA(_)));
        let m = ask(&r, "ip.bl.example.org.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        let m = ask(&r, "4.3.2.1.ip.bl.example.org.", RecordType::AXFR);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn base32_reaches_a_value_no_label_can_carry() {
        let (r, store) = responder(false);
        let url = "https://evil.example/a?b=c";
        sight(&store, "feeds/domain", url, 1);
        let q = crate::encoding::encode(url, crate::encoding::Encoding::Base32).expect("b32");
        let m = ask(&r, &format!("{q}.dom.bl.example.org."), RecordType::A);
        assert_eq!(a_of(&m), vec![Ipv4Addr::new(127, 0, 0, 2)]);
    }

    #[test]
    fn lookups_shadow_only_when_configured() {
        for shadow in [false, true] {
            let (r, store) = responder(shadow);
            sight(&store, "feeds/ipv4", "1.2.3.4", 1);
            ask(&r, "4.3.2.1.ip.bl.example.org.", RecordType::A);
            let shadowed = store
                .count(&Namespace::parse("_shadow/feeds/ipv4").expect("ns"), NOW)
                .expect("count");
            assert_eq!(shadowed.is_some(), shadow, "shadow = {shadow}");
        }
    }

    #[test]
    fn hostile_packets_get_formerr_or_nothing() {
        let (r, _) = responder(false);
        // Too short for a header, or a response: nothing.
        assert_eq!(r.respond(&[0; 11], true, NOW), Reply::Drop);
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("4.3.2.1.ip.bl.example.org.").expect("name"),
            RecordType::A,
        ));
        let good = q.to_vec().expect("encodes");
        let mut response = good.clone();
        response[2] |= 0x80;
        assert_eq!(r.respond(&response, true, NOW), Reply::Drop);
        let rcode = |p: &[u8]| match r.respond(p, true, NOW) {
            Reply::Send(b) => {
                assert_eq!(&b[..2], &p[..2], "the id is echoed");
                b[3] & 0x0f
            }
            Reply::Drop => panic!("dropped"),
        };
        // Many questions (counted in the header).
        let mut many = good.clone();
        many[4..6].copy_from_slice(&500u16.to_be_bytes());
        assert_eq!(rcode(&many), 1);
        // A truncated body.
        assert_eq!(rcode(&good[..good.len() - 3]), 1);
        // A compression pointer to itself.
        let mut lp = good[..12].to_vec();
        lp.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(rcode(&lp), 1);
        // An oversized packet.
        let mut big = good.clone();
        big.resize(crate::server::MAX_QUERY_LEN + 1, 0);
        assert_eq!(rcode(&big), 1);
        // EDNS version 1: BADVERS (16, its high bits in the OPT record).
        let mut v1 = Message::query();
        v1.add_query(Query::query(
            Name::from_ascii("4.3.2.1.ip.bl.example.org.").expect("name"),
            RecordType::A,
        ));
        let mut edns = Edns::new();
        edns.set_version(1);
        v1.set_edns(edns);
        match r.respond(&v1.to_vec().expect("encodes"), true, NOW) {
            // 16 is BADVERS in an answer (hickory-proto decodes it as BADSIG, same number).
            Reply::Send(b) => assert_eq!(
                u16::from(
                    Message::from_vec(&b)
                        .expect("decodes")
                        .metadata
                        .response_code
                ),
                16
            ),
            Reply::Drop => panic!("dropped"),
        }
        // An update (opcode 5): not implemented.
        let mut upd = good.clone();
        upd[2] = 5 << 3;
        assert_eq!(rcode(&upd), 4);
        // A name of more than 255 bytes does not decode.
        let mut long = good[..12].to_vec();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(rcode(&long), 1);
    }
}
