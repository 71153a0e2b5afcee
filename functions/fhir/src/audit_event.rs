//! AuditEvent (read, search; superusers only): the audit trail as FHIR R4 AuditEvents, following
//! IHE Basic Audit Log Patterns (BALP): a RESTful interaction, its outcome, the user who asked
//! and from where, the patient and the resource it touched. Reading them is itself audited.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::audit_events::{self, AuditEventOut, COLUMNS};
use serde_json::{json, Value};
use shared::auth::Superuser;
use shared::db::SqlParams;
use shared::trail::Audit;
use shared::{ApiError, ApiResult};
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::query::{self, Common, Total};
use crate::{FhirState, PublicBase};

/// The identifier system of CareVault's user ids (users are not FHIR resources here).
pub const USER_ID_SYSTEM: &str = "https://carevault.dev/fhir/sid/user-id";
/// The code system of CareVault's own action names (`patient.read`, `auth.login`...).
pub const ACTION_SYSTEM: &str = "https://carevault.dev/fhir/CodeSystem/audit-action";

/// FHIR's RESTful interaction and C/R/U/D/E action of one of our actions.
fn interaction(action: &str) -> (Option<&'static str>, &'static str) {
    match action.rsplit('.').next().unwrap_or("") {
        "create" => (Some("create"), "C"),
        "read" => (Some("read"), "R"),
        "search" | "list" => (Some("search-type"), "R"),
        "download" | "presigned_url" => (None, "R"),
        "update" => (Some("update"), "U"),
        "delete" => (Some("delete"), "D"),
        _ => (None, "E"),
    }
}

/// The SQL condition for a C/R/U/D/E action code over the `action` column.
fn action_condition(code: &str) -> Option<&'static str> {
    Some(match code {
        "C" => "action LIKE '%.create'",
        "R" => "(action LIKE '%.read' OR action LIKE '%.search' OR action LIKE '%.list' OR action LIKE '%.download' OR action LIKE '%.presigned_url')",
        "U" => "action LIKE '%.update'",
        "D" => "action LIKE '%.delete'",
        "E" => "NOT (action LIKE '%.create' OR action LIKE '%.read' OR action LIKE '%.search' OR action LIKE '%.list' OR action LIKE '%.download' OR action LIKE '%.presigned_url' OR action LIKE '%.update' OR action LIKE '%.delete')",
        _ => return None,
    })
}

/// The FHIR type a resource of the trail is, when it is one.
fn fhir_type(resource_type: &str) -> Option<&'static str> {
    match resource_type {
        "patient" => Some("Patient"),
        "attachment" => Some("DocumentReference"),
        "audit_event" => Some("AuditEvent"),
        _ => None,
    }
}

pub fn resource(event: &AuditEventOut) -> Value {
    let (rest, action) = interaction(&event.action);
    let mut subtype = vec![json!({ "system": ACTION_SYSTEM, "code": event.action })];
    if let Some(rest) = rest {
        subtype.insert(
            0,
            json!({ "system": "http://hl7.org/fhir/restful-interaction", "code": rest }),
        );
    }
    let mut agent = json!({
        "type": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "code": "IRCP", "display": "information recipient",
        }]},
        "requestor": true,
    });
    match event.actor_id {
        Some(id) => {
            agent["who"] = json!({
                "identifier": { "system": USER_ID_SYSTEM, "value": id },
                "display": event.actor_email,
            })
        }
        // A request without a valid token: who it was is not known.
        None => {
            agent["who"] = json!({ "display": event.actor_email.as_deref().unwrap_or("unauthenticated or system") })
        }
    }
    if let Some(address) = &event.source_ip {
        agent["network"] = json!({ "address": address, "type": "2" });
    }
    let mut entities = Vec::new();
    if let Some(patient) = event.patient_id {
        entities.push(json!({
            "what": { "reference": format!("Patient/{patient}") },
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person" },
            "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient" },
        }));
    }
    if let Some(id) = event.resource_id {
        let what = match fhir_type(&event.resource_type) {
            Some(kind) => json!({ "reference": format!("{kind}/{id}") }),
            None => {
                json!({ "identifier": { "system": format!("https://carevault.dev/fhir/sid/{}-id", event.resource_type), "value": id } })
            }
        };
        if event.patient_id != Some(id) {
            entities.push(json!({
                "what": what,
                "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object" },
            }));
        }
    }
    let mut resource = json!({
        "resourceType": "AuditEvent",
        "id": event.id,
        "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation" },
        "subtype": subtype,
        "action": action,
        "recorded": event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "outcome": if event.outcome == "success" { "0" } else { "4" },
        "outcomeDesc": event.outcome,
        "agent": [agent],
        "source": {
            "observer": { "display": "CareVault" },
            "type": [{ "system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server" }],
        },
    });
    if !entities.is_empty() {
        resource["entity"] = Value::Array(entities);
    }
    resource
}

fn not_found(raw_id: &str) -> ApiError {
    ApiError::NotFound(format!("AuditEvent/{raw_id} is not known"))
}

/// `GET /fhir/R4/AuditEvent/{id}`.
pub async fn read(
    State(state): State<FhirState>,
    _superuser: Superuser,
    audit: Audit,
    Path(raw_id): Path<String>,
) -> ApiResult<Json<Value>> {
    audit.describe(|event| event.details(json!({ "interface": "fhir" })));
    let id = Uuid::parse_str(&raw_id).map_err(|_| not_found(&raw_id))?;
    let row = state
        .auth
        .pool
        .get()
        .await?
        .query_opt(
            &format!("SELECT {COLUMNS} FROM audit_events WHERE id = $1"),
            &[&id],
        )
        .await?
        .ok_or_else(|| not_found(&raw_id))?;
    let event = AuditEventOut::from_row(&row);
    audit.describe(|e| e.patient(event.patient_id));
    Ok(Json(resource(&event)))
}

/// `GET /fhir/R4/AuditEvent?...`: by `patient`, `date`, `agent`, `action`, `outcome`, newest
/// first, paged by cursor.
pub async fn search(
    State(state): State<FhirState>,
    _superuser: Superuser,
    audit: Audit,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let params = query::params(raw.as_deref());
    let mut sql = SqlParams::new();
    let mut clauses: Vec<String> = Vec::new();
    let mut common = Common::new();
    let bad = ApiError::BadRequest;
    for param in &params {
        if common.take(param)? {
            continue;
        }
        let value = param.value.trim();
        let any_of = |parse: &dyn Fn(&str) -> Option<String>| -> Result<String, ApiError> {
            let each: Option<Vec<String>> = value.split(',').map(|v| parse(v.trim())).collect();
            each.map(|c| format!("({})", c.join(" OR ")))
                .ok_or_else(|| bad(format!("{}={value:?} is not understood", param.name)))
        };
        match (param.name.as_str(), param.modifier.as_deref()) {
            ("patient", None) => {
                let ids: Vec<Uuid> = value
                    .split(',')
                    .map(|r| {
                        Uuid::parse_str(r.trim().rsplit('/').next().unwrap_or(""))
                            .unwrap_or(Uuid::nil())
                    })
                    .collect();
                clauses.push(format!(
                    "patient_id = ANY({})",
                    sql.push(ids, Type::UUID_ARRAY)
                ));
            }
            ("agent", None) => {
                // A user id, with or without its system (`system|id`).
                let ids: Vec<Uuid> = value
                    .split(',')
                    .map(|r| {
                        Uuid::parse_str(r.trim().rsplit(['|', '/']).next().unwrap_or(""))
                            .unwrap_or(Uuid::nil())
                    })
                    .collect();
                clauses.push(format!(
                    "actor_id = ANY({})",
                    sql.push(ids, Type::UUID_ARRAY)
                ));
            }
            ("action", None) => {
                clauses.push(any_of(&|code| action_condition(code).map(str::to_owned))?)
            }
            ("outcome", None) => clauses.push(any_of(&|code| match code {
                "0" => Some("outcome = 'success'".to_owned()),
                "4" => Some("outcome <> 'success'".to_owned()),
                // Serious and major failures (server errors) are logged, not audited.
                "8" | "12" => Some("false".to_owned()),
                _ => None,
            })?),
            // A date covers its UTC days, an instant (with its offset) its precision.
            ("date", None) => clauses.push(
                query::instant_value(value)
                    .map_err(bad)?
                    .condition("occurred_at", &mut sql),
            ),
            _ => common.unknown(param),
        }
    }
    common.check(&headers)?;
    // The trail grows by the second: its total is the planner's estimate unless an accurate
    // count is asked for (which counts every matching event).
    let filter: String = clauses.iter().map(|c| format!(" AND {c}")).collect();
    let total_sql = match common.total.unwrap_or(Total::Estimate) {
        Total::Accurate => Some(format!(
            "SELECT count(*) FROM audit_events WHERE true{filter}"
        )),
        Total::Estimate => Some(format!(
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM audit_events WHERE true{filter}"
        )),
        Total::None => None,
    };
    let keyset = query::Keyset::of(common.cursor.as_deref(), audit_events::decode_cursor)?;
    let limit = common.count;
    let (after, order) = keyset.sql("occurred_at", &mut sql);
    let page_filter = format!("{filter}{after}");
    let wanted = sql.push(limit + 1, Type::INT8);
    let client = state.db.get().await?;
    let typed = sql.typed();
    // The count's statement takes the page's parameters (typed, so those it does not use are
    // fine), in the same round trip.
    let page_sql = format!(
        "SELECT {COLUMNS} FROM audit_events WHERE true{page_filter}
         ORDER BY {order} LIMIT {wanted}"
    );
    let (rows, total) = tokio::try_join!(client.query_typed(&page_sql, &typed), async {
        match &total_sql {
            Some(statement) => client.query_typed_one(statement, &typed).await.map(Some),
            None => Ok(None),
        }
    })?;
    let total = total.and_then(|row| match row.try_get::<_, i64>(0) {
        Ok(count) => Some(count),
        Err(_) => shared::db::plan_rows(&row.get::<_, Value>(0)),
    });
    drop(client);
    let mut events: Vec<AuditEventOut> = rows.iter().map(AuditEventOut::from_row).collect();
    let (previous, next) = keyset.page(&mut events, limit, |e| {
        audit_events::encode_cursor(e.occurred_at, e.id)
    });
    audit.describe(|event| event.details(json!({ "interface": "fhir", "events": events.len() })));
    let base = PublicBase::of(&state.base, &headers, &uri);
    let entries = events
        .iter()
        .map(|e| crate::patient::entry(&base, resource(e)))
        .collect();
    Ok(Json(crate::patient::bundle(
        &base,
        "AuditEvent",
        &params,
        &common.unknown,
        (previous.as_deref(), next.as_deref()),
        total,
        entries,
    ))
    .into_response())
}
