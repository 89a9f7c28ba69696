//! `GET /iep04/links/{uuid}` (every message linking to `uuid`, with the withdrawals and
//! replacements that take effect) and `GET /iep04/links?alternate=ID`.

use super::iep04::{parse_uuid, query, require_read, MAX_LINKS};
use super::{blocking, Resp};
use crate::error::{json_response, ApiError};
use hyper::StatusCode;
use serde_json::{json, Value};
use sighthub_exchange::record::LinkRel;
use sighthub_exchange::store::IncomingLink;
use sighthub_exchange::{Grants, Inner};
use std::sync::Arc;
use uuid::Uuid;

/// `GET /iep04/links/{uuid}`.
pub(crate) async fn links_route(
    inner: &Arc<Inner>,
    grants: Arc<Grants>,
    id: &str,
    raw_query: &str,
) -> Result<Resp, ApiError> {
    query(raw_query, &[])?;
    links(inner, grants, parse_uuid(id)?).await
}

/// `GET /iep04/links?alternate=ID`.
pub(crate) async fn alternate_route(
    inner: &Arc<Inner>,
    grants: Arc<Grants>,
    raw_query: &str,
) -> Result<Resp, ApiError> {
    let q = query(raw_query, &["alternate"])?;
    let alt = q.get("alternate").cloned().ok_or_else(|| {
        ApiError::BadRequest(
            "GET /iep04/links needs ?alternate=<id> (or /iep04/links/<uuid>).".into(),
        )
    })?;
    if !sighthub_exchange::record::alternate_fits(&alt) {
        return Err(ApiError::BadRequest(format!(
            "alternate is {} bytes long; the limit is {} bytes.",
            alt.len(),
            sighthub_exchange::record::MAX_ALTERNATE_LEN
        )));
    }
    by_alternate(inner, grants, alt).await
}

/// Withdrawals and replacements of a message of `target_org`, among the links pointing at
/// it (`target`): those that take effect by the one rule ([`sighthub_iep04::authority`]).
pub(crate) fn marks(
    target: Uuid,
    links: &[IncomingLink],
    target_org: Option<Uuid>,
) -> (Vec<String>, Vec<String>) {
    let (mut withdrawn, mut replaced) = (Vec::new(), Vec::new());
    for l in links {
        // The index keeps a typed link's type and sides: rebuild it as the source wrote it.
        let LinkRel::Typed {
            link_type,
            target_left,
            from_self,
        } = &l.rel
        else {
            continue;
        };
        let other = if *from_self { l.source } else { Uuid::nil() };
        let (left, right) = if *target_left {
            (target, other)
        } else {
            (other, target)
        };
        let link = sighthub_iep04::TypedLink {
            left,
            link_type: sighthub_iep04::LinkType::from(link_type.as_str()),
            right,
        };
        let Some(claim) = sighthub_iep04::claim_of_link(l.source, &link) else {
            continue;
        };
        if claim.target != target || !sighthub_iep04::takes_effect(l.org, target_org) {
            continue;
        }
        match claim.act {
            sighthub_iep04::Act::Withdraw => withdrawn.push(l.source.to_string()),
            sighthub_iep04::Act::Replace => replaced.push(l.source.to_string()),
            sighthub_iep04::Act::UpdateTags => {}
        }
    }
    (withdrawn, replaced)
}

fn rel_json(rel: &LinkRel) -> Value {
    match rel {
        LinkRel::Related => json!({"relation": "related"}),
        LinkRel::Group => json!({"relation": "group"}),
        LinkRel::Typed {
            link_type,
            target_left,
            from_self,
        } => json!({
            "relation": "typed",
            "type": link_type,
            "side": if *target_left { "left" } else { "right" },
            "from_self": from_self,
        }),
    }
}

async fn links(inner: &Arc<Inner>, grants: Arc<Grants>, uuid: Uuid) -> Result<Resp, ApiError> {
    require_read(&grants)?;
    let store = Arc::clone(&inner.store);
    let default_tlp = inner.cfg.default_tlp;
    let g = Arc::clone(&grants);
    let (list, target_org) = blocking(move || {
        let mut out = Vec::new();
        for l in store.links_to(&uuid, MAX_LINKS)? {
            if let Some(rec) = store.get_seq(l.seq)? {
                let e = rec.entry()?;
                if g.may_read(e.format_type, &e.tags, e.tlp, default_tlp) {
                    out.push(l);
                }
            }
        }
        let target_org = match store.lookup(&uuid)? {
            Some((_, Some(rec))) => rec.entry().ok().and_then(|e| e.org),
            _ => None,
        };
        Ok((out, target_org))
    })
    .await?;
    let (withdrawn, replaced) = marks(uuid, &list, target_org);
    let items: Vec<Value> = list
        .iter()
        .map(|l| {
            let mut v = rel_json(&l.rel);
            v["uuid"] = Value::from(l.source.to_string());
            v["seq"] = Value::from(l.seq);
            v
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "uuid": uuid.to_string(),
            "count": items.len(),
            "links": items,
            "withdrawn_by": withdrawn,
            "replaced_by": replaced,
        }),
    ))
}

async fn by_alternate(
    inner: &Arc<Inner>,
    grants: Arc<Grants>,
    alt: String,
) -> Result<Resp, ApiError> {
    require_read(&grants)?;
    let store = Arc::clone(&inner.store);
    let default_tlp = inner.cfg.default_tlp;
    let a = alt.clone();
    let list = blocking(move || {
        let mut out = Vec::new();
        for (uuid, seq) in store.by_alternate(&a, MAX_LINKS)? {
            if let Some(rec) = store.get_seq(seq)? {
                let e = rec.entry()?;
                if grants.may_read(e.format_type, &e.tags, e.tlp, default_tlp) {
                    out.push(json!({"uuid": uuid.to_string(), "seq": seq}));
                }
            }
        }
        Ok(out)
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"alternate": alt, "count": list.len(), "messages": list}),
    ))
}
