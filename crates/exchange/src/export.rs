//! What a consumer reads: envelopes (the default, a byte copy of the stored line) or bare
//! IntelMQ events (optionally with `__type`), framed as one JSON document or as ND-JSON.
//!
//! In the bare IntelMQ export, entries that have no IntelMQ form are skipped (their cursor
//! still advances): tag updates, messages without payload (a payload-less withdrawal), and
//! formats other than `intelmq`.

use sighthub_iep04::{Message, Tlp, FORMAT_INTELMQ};
use std::ops::ControlFlow;

use crate::access::Grants;
use crate::record::{EntryKind, LogEntry};

/// Which form messages are exported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// The IEP04 envelope (decided form): for other sighthub instances and IEP04-aware tools.
    Envelope,
    /// The bare IntelMQ event, as IntelMQ's outputs write it.
    IntelMq {
        /// Append `"__type": "Event"` (IntelMQ's `message_with_type`).
        with_type: bool,
    },
}

/// How a page is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `{"cursor":…,"count":…,"more":…,"truncated":…,"messages":[…]}`.
    Json,
    /// One message per line; cursor and counts in the `IEP04-*` response headers.
    NdJson,
}

/// Collects the visible messages of one scan into a page body.
pub struct Renderer<'a> {
    grants: &'a Grants,
    default_tlp: Tlp,
    export: Export,
    framing: Framing,
    limit: usize,
    /// Byte budget of the page ([`Renderer::with_max_bytes`]).
    max_bytes: usize,
    /// The rendered messages, separated for the framing (no envelope around them yet).
    pub out: Vec<u8>,
    /// How many.
    pub count: usize,
    /// The scan stopped on an entry that did not fit the byte budget: it was not taken, so
    /// the next page must start at it (the cursor is the seq before it).
    pub overflow: bool,
}

impl<'a> Renderer<'a> {
    /// A renderer for one page of at most `limit` messages.
    pub fn new(
        grants: &'a Grants,
        default_tlp: Tlp,
        export: Export,
        framing: Framing,
        limit: usize,
    ) -> Self {
        Renderer {
            grants,
            default_tlp,
            export,
            framing,
            limit,
            max_bytes: usize::MAX,
            out: Vec::with_capacity(limit.min(1024) * 1100),
            count: 0,
            overflow: false,
        }
    }

    /// A page stops before it grows past `n` bytes (the exchange's `max_page_bytes`); its
    /// first message is always taken, whatever its size, so a reader always moves on.
    pub fn with_max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n;
        self
    }

    /// May the caller see this entry?
    pub fn visible(&self, entry: &LogEntry<'_>) -> bool {
        self.grants
            .may_read(entry.format_type, &entry.tags, entry.tlp, self.default_tlp)
    }

    /// Scan callback: renders `entry` if visible; breaks when the page is full.
    pub fn visit(&mut self, entry: &LogEntry<'_>) -> ControlFlow<()> {
        if !self.visible(entry) {
            return ControlFlow::Continue(());
        }
        self.render(entry)
    }

    /// Renders `entry`, already known to be visible (a [`crate::Reader`] filtered it);
    /// breaks when the page is full ([`Renderer::overflow`]: without it).
    pub fn render(&mut self, entry: &LogEntry<'_>) -> ControlFlow<()> {
        let start = self.out.len();
        if self.count > 0 && self.framing == Framing::Json {
            self.out.push(b',');
        }
        let ok = match self.export {
            Export::Envelope => {
                self.out.extend_from_slice(entry.json);
                true
            }
            Export::IntelMq { with_type } => render_bare(entry, with_type, &mut self.out),
        };
        if !ok {
            self.out.truncate(start);
            return ControlFlow::Continue(());
        }
        if self.framing == Framing::NdJson {
            self.out.push(b'\n');
        }
        if self.count > 0 && self.out.len() > self.max_bytes {
            self.out.truncate(start);
            self.overflow = true;
            return ControlFlow::Break(());
        }
        self.count += 1;
        if self.count >= self.limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// Appends the bare IntelMQ event of `entry`; `false` when it has none.
fn render_bare(entry: &LogEntry<'_>, with_type: bool, out: &mut Vec<u8>) -> bool {
    if entry.kind == EntryKind::TagUpdate
        || !entry.has_payload()
        || !entry
            .format_type
            .strip_prefix(FORMAT_INTELMQ)
            .is_some_and(|r| r.starts_with('/'))
    {
        return false;
    }
    let Ok(msg) = Message::from_slice(entry.json) else {
        return false;
    };
    match msg.to_bare_event(with_type) {
        Ok(ev) => serde_json::to_writer(&mut *out, &ev).is_ok(),
        Err(_) => false,
    }
}

/// The JSON page document around rendered messages.
pub fn json_page(
    cursor: &str,
    count: usize,
    more: bool,
    truncated: bool,
    messages: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(messages.len() + 128);
    out.extend_from_slice(b"{\"cursor\":");
    out.extend_from_slice(serde_json::Value::from(cursor).to_string().as_bytes());
    out.extend_from_slice(
        format!(",\"count\":{count},\"more\":{more},\"truncated\":{truncated},\"messages\":[")
            .as_bytes(),
    );
    out.extend_from_slice(messages);
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FLAG_PAYLOAD, FLAG_WRAPPED};
    use uuid::Uuid;

    fn entry<'a>(json: &'a [u8], tags: Vec<&'a str>, tlp: Option<Tlp>, flags: u8) -> LogEntry<'a> {
        LogEntry {
            kind: EntryKind::Message,
            tlp,
            flags,
            accepted_at: 1,
            uuid: Uuid::from_u128(1),
            org: None,
            format_type: "intelmq/event",
            tags,
            json,
        }
    }

    const ENV: &[u8] = br#"{"format":"intelmq","version":1,"type":"event","meta":{"uuid":"03c51929-eeab-4d47-9dc0-c667f94c7d2c","tags":[]},"payload":{"source.ip":"198.51.100.1","raw":"eA=="}}"#;

    #[test]
    fn envelope_pages_copy_bytes_and_respect_limit() {
        let g = Grants::admin(Uuid::from_u128(1));
        let mut r = Renderer::new(&g, Tlp::Amber, Export::Envelope, Framing::Json, 2);
        let e = entry(ENV, vec![], None, FLAG_PAYLOAD);
        assert!(r.visit(&e).is_continue());
        assert!(r.visit(&e).is_break());
        let page = json_page("c", r.count, true, false, &r.out);
        let v: serde_json::Value = serde_json::from_slice(&page).expect("valid JSON");
        assert_eq!(v["count"], 2);
        assert_eq!(v["messages"][1]["payload"]["source.ip"], "198.51.100.1");
    }

    #[test]
    fn bare_export_with_type_and_skips() {
        let g = Grants::admin(Uuid::from_u128(1));
        let mut r = Renderer::new(
            &g,
            Tlp::Amber,
            Export::IntelMq { with_type: true },
            Framing::NdJson,
            10,
        );
        let _ = r.visit(&entry(ENV, vec![], None, FLAG_PAYLOAD | FLAG_WRAPPED));
        let _ = r.visit(&entry(ENV, vec![], None, 0)); // no payload: skipped
        let mut upd = entry(ENV, vec![], None, FLAG_PAYLOAD);
        upd.kind = EntryKind::TagUpdate;
        let _ = r.visit(&upd);
        let mut ail = entry(ENV, vec![], None, FLAG_PAYLOAD);
        ail.format_type = "intelmqx/event";
        let _ = r.visit(&ail);
        assert_eq!(r.count, 1);
        let line: serde_json::Value =
            serde_json::from_slice(r.out.strip_suffix(b"\n").expect("newline")).expect("JSON");
        assert_eq!(
            line,
            serde_json::json!({"source.ip":"198.51.100.1","raw":"eA==","__type":"Event"})
        );
    }

    #[test]
    fn invisible_entries_are_skipped() {
        let mut g = Grants::admin(Uuid::from_u128(1));
        g.tlp_max = Tlp::Green;
        let mut r = Renderer::new(&g, Tlp::Amber, Export::Envelope, Framing::NdJson, 10);
        let _ = r.visit(&entry(ENV, vec![], None, FLAG_PAYLOAD));
        let _ = r.visit(&entry(ENV, vec![], Some(Tlp::Red), FLAG_PAYLOAD));
        assert_eq!(r.count, 0);
        let _ = r.visit(&entry(
            ENV,
            vec!["tlp:green"],
            Some(Tlp::Green),
            FLAG_PAYLOAD,
        ));
        assert_eq!(r.count, 1);
    }
}
