//! Search answers: the searchset Bundle, its entries and its links, for every resource's
//! search.

use serde_json::{json, Value};

use crate::query;

/// A link of a search on `resource_type`: the search's own parameters (unknown ones dropped),
/// and the cursor.
fn link(
    base: &str,
    resource_type: &str,
    params: &[query::Param],
    unknown: &[String],
    cursor: Option<&str>,
) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for param in params {
        let name = match &param.modifier {
            Some(m) => format!("{}:{m}", param.name),
            None => param.name.clone(),
        };
        if param.name != "_cursor" && !unknown.contains(&name) {
            query.append_pair(&name, &param.value);
        }
    }
    if let Some(cursor) = cursor {
        query.append_pair("_cursor", cursor);
    }
    let query = query.finish();
    if query.is_empty() {
        format!("{base}/{resource_type}")
    } else {
        format!("{base}/{resource_type}?{query}")
    }
}

/// A searchset entry: the resource, its absolute `fullUrl` (`[base]/{type}/{id}`), a match.
pub fn entry(base: &str, resource: Value) -> Value {
    let full_url = format!(
        "{base}/{}/{}",
        resource["resourceType"].as_str().unwrap_or_default(),
        resource["id"].as_str().unwrap_or_default()
    );
    json!({ "fullUrl": full_url, "resource": resource, "search": { "mode": "match" } })
}

/// A searchset Bundle: `self` (with the request's own cursor), `previous` and `next` links, `total`
/// unless not counted, the entries.
pub fn searchset(
    base: &str,
    resource_type: &str,
    params: &[query::Param],
    unknown: &[String],
    (previous, next): (Option<&str>, Option<&str>),
    total: Option<i64>,
    entries: Vec<Value>,
) -> Value {
    let own_cursor = params
        .iter()
        .find(|p| p.name == "_cursor")
        .map(|p| p.value.as_str());
    let mut links = vec![
        json!({ "relation": "self", "url": link(base, resource_type, params, unknown, own_cursor) }),
    ];
    for (relation, cursor) in [("previous", previous), ("next", next)] {
        if let Some(cursor) = cursor {
            links.push(json!({
                "relation": relation,
                "url": link(base, resource_type, params, unknown, Some(cursor)),
            }));
        }
    }
    let mut bundle = json!({ "resourceType": "Bundle", "type": "searchset", "link": links });
    if let Some(total) = total {
        bundle["total"] = json!(total);
    }
    if !entries.is_empty() {
        bundle["entry"] = Value::Array(entries);
    }
    bundle
}
