//! `GET /fhir/R4/metadata` (no token): what this server does, and nothing it does not.

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::Json;
use serde_json::{json, Value};

use crate::patient::MEDICAL_HISTORY_EXTENSION;
use crate::PublicBase;

/// The canonical URL of the `$presigned-url` operation on Binary, as documented here (the
/// design Medplum adopted in 2026).
const BINARY_PRESIGNED_URL: &str =
    "https://carevault.dev/fhir/OperationDefinition/Binary-presigned-url";

/// The date of this statement's content: changed with what the server supports.
const STATEMENT_DATE: &str = "2026-12-07";

/// The Bulk Data operations' definitions (FHIR Bulk Data Access 2.0.0).
const BULK_EXPORT: &str = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export";
const BULK_GROUP_EXPORT: &str = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export";
const BULK_PATIENT_EXPORT: &str =
    "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export";

fn search_param(name: &str, kind: &str, definition: &str, documentation: &str) -> Value {
    json!({ "name": name, "type": kind, "definition": definition, "documentation": documentation })
}

/// The authorization server's endpoints under the API's root.
struct SmartEndpoints {
    authorize: String,
    token: String,
    revoke: String,
    introspect: String,
}

fn smart_endpoints(root: &str) -> SmartEndpoints {
    SmartEndpoints {
        authorize: format!("{root}/api/v1/smart/authorize"),
        token: format!("{root}/api/v1/smart/token"),
        revoke: format!("{root}/api/v1/smart/revoke"),
        introspect: format!("{root}/api/v1/smart/introspect"),
    }
}

/// `GET /fhir/R4/.well-known/smart-configuration` (no token): SMART App Launch 2's discovery
/// document, JSON whatever the Accept header.
pub async fn smart_configuration(
    State(base): State<PublicBase>,
    headers: HeaderMap,
    uri: Uri,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let root = base.api_root(&headers, &uri);
    let smart = smart_endpoints(&root);
    let issuer = base.of(&headers, &uri);
    let mut response = Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{root}/api/v1/.well-known/jwks.json"),
        "authorization_endpoint": smart.authorize,
        "token_endpoint": smart.token,
        "revocation_endpoint": smart.revoke,
        "introspection_endpoint": smart.introspect,
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "response_types_supported": ["code"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": domain::smart::scopes::SCOPES_SUPPORTED,
        "capabilities": [
            "launch-standalone", "launch-ehr", "client-public", "client-confidential-symmetric",
            "client-confidential-asymmetric", "context-standalone-patient", "context-ehr-patient",
            "permission-patient", "permission-user", "permission-offline", "permission-online",
            "permission-v1", "permission-v2", "sso-openid-connect", "authorize-post",
        ],
    }))
    .into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("public, max-age=3600"),
    );
    response.extensions_mut().insert(crate::outcome::PlainJson);
    response
}

/// `GET /fhir/R4/metadata`. (Long because it is one document, written out as FHIR lays it out.)
pub async fn capability_statement(
    State(base): State<PublicBase>,
    headers: HeaderMap,
    uri: Uri,
) -> Json<Value> {
    let smart = smart_endpoints(&base.api_root(&headers, &uri));
    let base = base.of(&headers, &uri);
    Json(json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": STATEMENT_DATE,
        "publisher": "CareVault",
        "kind": "instance",
        "software": { "name": "CareVault", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "CareVault FHIR R4 interface", "url": base },
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "documentation": "Search answers a Bundle (searchset) linking self, previous and next, paged by an opaque cursor. _count defaults to 20, at most 200, and a page is cut earlier to stay under 5 MB (next goes on from there). _total takes none, estimate or accurate. A repeated parameter is AND; values separated by commas are OR. Searches are strict: an unknown parameter is 400 with an OperationOutcome whose issue.location names it (http.<name>), unless Prefer: handling=lenient, which ignores it (the self link then shows only what was applied); a modifier not listed here (only name:exact is supported) is 400 either way. Not supported: _history (vread, history), patch, _include, _revinclude, _elements, _summary, chained parameters, XML.",
            "security": {
                "cors": true,
                "service": [{ "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    },
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "OAuth",
                    },
                ]}],
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [
                        { "url": "authorize", "valueUri": smart.authorize },
                        { "url": "token", "valueUri": smart.token },
                        { "url": "revoke", "valueUri": smart.revoke },
                        { "url": "introspect", "valueUri": smart.introspect },
                    ],
                }],
                "description": "SMART on FHIR (App Launch 2 and Backend Services; see .well-known/smart-configuration): a SMART token's scopes limit every interaction, a patient/ scope to its patient's compartment. CareVault session tokens from POST /api/v1/login/access-token (ES256, JWK Set at /api/v1/.well-known/jwks.json) keep their user's role. Viewers read and search; clinicians and superusers also write.",
            },
            "resource": [{
                "type": "Patient",
                "profile": "http://hl7.org/fhir/StructureDefinition/Patient",
                "documentation": format!("name[0].text is the record's name (family and given when it splits cleanly), birthDate the date of birth, telecom the contact information (email, phone or other), identifier the record's identifiers (system and value; a pair names one patient; use, type, period and assigner are not kept), and the medical history the extension {MEDICAL_HISTORY_EXTENSION} (valueString). _sort takes name, birthdate and _lastUpdated, each with -; _total defaults to accurate."),
                "interaction": [
                    { "code": "read" },
                    { "code": "search-type" },
                    { "code": "create", "documentation": "201 with Location [base]/Patient/{id}/_history/{version}; a client's id and meta are ignored. If-None-Exist (any Patient search, such as identifier=system|value): no match creates, one match answers 200 with it and creates nothing, several are 412. An identifier another patient holds is 409. Clinicians and superusers." },
                    { "code": "update", "documentation": "Replaces the record's fields; the body's id must be the URL's; If-Match: W/\"n\" (or \"n\") against meta.versionId, 412 on a mismatch. Clinicians and superusers." },
                    { "code": "delete", "documentation": "The record, its attachments and their files; If-Match as for update. Clinicians and superusers." },
                ],
                "versioning": "versioned-update",
                "readHistory": false,
                "updateCreate": false,
                "conditionalCreate": true,
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
                "searchParam": [
                    search_param("_id", "token", "http://hl7.org/fhir/SearchParameter/Resource-id", "One id, or several separated by commas (any of them)."),
                    search_param("name", "string", "http://hl7.org/fhir/SearchParameter/Patient-name", "Each word starts a word of the name, case and accent insensitive, in any order (the JSON API's name_text); name:exact is the whole name as stored. Repeat the parameter for AND; commas: any of them."),
                    search_param("birthdate", "date", "http://hl7.org/fhir/SearchParameter/individual-birthdate", "With the prefixes eq, ne, gt, lt, ge, le (sa, eb as gt, lt) and partial dates: birthdate=1980 is the whole year. Repeat the parameter for AND; commas: any of them."),
                    search_param("identifier", "token", "http://hl7.org/fhir/SearchParameter/Patient-identifier", "system|value, system| (any value of the system), |value (no system: no match, every identifier here has one) or value (any system); exact match; commas: any of them."),
                    search_param("_lastUpdated", "date", "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated", "meta.lastUpdated with the prefixes eq, ne, gt, lt, ge, le: a date covers its UTC days, an instant (with Z or an offset) its second or its fraction's precision."),
                ],
                "operation": [{
                    "name": "export",
                    "definition": BULK_PATIENT_EXPORT,
                    "documentation": "GET or POST [base]/Patient/$export: every patient's Patient and DocumentReferences, as the system-level $export.",
                }],
            }, {
                "type": "DocumentReference",
                "profile": "http://hl7.org/fhir/StructureDefinition/DocumentReference",
                "documentation": "An attachment: status current, subject the patient, date its creation, content[0].attachment its contentType, title (file name), size and url ([base]/Binary/{id}); docStatus preliminary while its upload is pending, final once stored. Newest first; _total defaults to accurate.",
                "interaction": [
                    { "code": "read" },
                    { "code": "search-type" },
                    { "code": "create", "documentation": "subject (a Patient reference) and one content[0].attachment with title (the file name), contentType and size; no data or url. 201 with docStatus preliminary; the bytes go to the upload URL of Binary/{id}/$presigned-url?upload=true (one PUT, at most 5 GiB; larger files through the JSON API's multipart upload). Clinicians and superusers." },
                    { "code": "delete", "documentation": "The attachment and its file (a pending upload is aborted). Clinicians and superusers." },
                ],
                "versioning": "no-version",
                "readHistory": false,
                "updateCreate": false,
                "conditionalCreate": false,
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
                "searchParam": [
                    search_param("patient", "reference", "http://hl7.org/fhir/SearchParameter/clinical-patient", "123, Patient/123 or an absolute URL; commas: any of them."),
                    search_param("subject", "reference", "http://hl7.org/fhir/SearchParameter/DocumentReference-subject", "As patient."),
                    search_param("contenttype", "token", "http://hl7.org/fhir/SearchParameter/DocumentReference-contenttype", "The MIME type; commas: any of them."),
                    search_param("date", "date", "http://hl7.org/fhir/SearchParameter/DocumentReference-date", "When the attachment was created, with the prefixes eq, ne, gt, lt, ge, le: a date covers its UTC days, an instant (with Z or an offset) its second or its fraction's precision."),
                ],
            }, {
                "type": "Binary",
                "profile": "http://hl7.org/fhir/StructureDefinition/Binary",
                "documentation": "An attachment's bytes: read answers 302 to a short-lived download URL (Cache-Control: no-store); they never pass through this server.",
                "interaction": [{ "code": "read" }],
                "versioning": "no-version",
                "readHistory": false,
                "operation": [{
                    "name": "presigned-url",
                    "definition": BINARY_PRESIGNED_URL,
                    "documentation": "GET [base]/Binary/{id}/$presigned-url: a Parameters resource with url (the download URL). With upload=true (clinicians and superusers, a pending single upload): url, method PUT, one header per header the signature covers (name: value), and expires.",
                }],
            }, {
                "type": "Practitioner",
                "profile": "http://hl7.org/fhir/StructureDefinition/Practitioner",
                "documentation": "CareVault's users, as the fhirUser of SMART ID tokens: name, email, active. Read-only: one's own (a SMART token needs fhirUser or a Practitioner scope), anyone's for superusers.",
                "interaction": [{ "code": "read" }],
                "versioning": "no-version",
                "readHistory": false,
            }, {
                "type": "AuditEvent",
                "profile": "http://hl7.org/fhir/StructureDefinition/AuditEvent",
                "documentation": "The audit trail following IHE BALP, superusers only (reading it is audited): type rest, subtype the RESTful interaction and CareVault's action, action C/R/U/D/E, recorded, outcome 0, 4 or 8 (a request whose handler failed) with outcomeDesc, agent (the user as an identifier, requestor, network address), source.observer, entity for the patient and the resource. Newest first; _total defaults to estimate (the trail grows by the second; accurate counts every matching event).",
                "interaction": [{ "code": "read" }, { "code": "search-type" }],
                "versioning": "no-version",
                "readHistory": false,
                "searchParam": [
                    search_param("patient", "reference", "http://hl7.org/fhir/SearchParameter/clinical-patient", "123, Patient/123 or an absolute URL; commas: any of them."),
                    search_param("date", "date", "http://hl7.org/fhir/SearchParameter/AuditEvent-date", "When it was recorded, with the prefixes eq, ne, gt, lt, ge, le: a date covers its UTC days, an instant (with Z or an offset) its second or its fraction's precision."),
                    search_param("agent", "reference", "http://hl7.org/fhir/SearchParameter/AuditEvent-agent", "The user id (optionally system|id); commas: any of them."),
                    search_param("action", "token", "http://hl7.org/fhir/SearchParameter/AuditEvent-action", "C, R, U, D or E; commas: any of them."),
                    search_param("outcome", "token", "http://hl7.org/fhir/SearchParameter/AuditEvent-outcome", "0 (success), 4 (refused: denied, not found, invalid) or 8 (the handler failed); commas: any of them."),
                ],
            }, {
                "type": "Group",
                "profile": "http://hl7.org/fhir/StructureDefinition/Group",
                "documentation": "A cohort of patients to export (Group/{id}/$export): type person, actual true, name, member[].entity a Patient reference (at most 20,000), quantity the members' count. A deleted patient leaves its groups. Search entries carry quantity without the members (tagged SUBSETTED; read the Group for them); newest first; _total defaults to accurate. Viewers read and search; clinicians and superusers write; a patient-scoped SMART token reaches none.",
                "interaction": [
                    { "code": "read" },
                    { "code": "search-type" },
                    { "code": "create", "documentation": "201 with Location [base]/Group/{id}/_history/{version}; a member that is no patient of this server is 422." },
                    { "code": "update", "documentation": "Replaces the name and members; If-Match: W/\"n\" against meta.versionId, 412 on a mismatch." },
                    { "code": "delete" },
                ],
                "versioning": "versioned-update",
                "readHistory": false,
                "updateCreate": false,
                "conditionalCreate": false,
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
                "searchParam": [
                    search_param("_id", "token", "http://hl7.org/fhir/SearchParameter/Resource-id", "One id, or several separated by commas (any of them)."),
                    search_param("name", "string", "http://hl7.org/fhir/SearchParameter/Group-name", "The name starts with it, in any case; repeat the parameter for AND."),
                    search_param("member", "reference", "http://hl7.org/fhir/SearchParameter/Group-member", "Patient/123 or an absolute URL: groups with that member; repeat the parameter for AND."),
                ],
                "operation": [{
                    "name": "export",
                    "definition": BULK_GROUP_EXPORT,
                    "documentation": "GET or POST [base]/Group/{id}/$export: its members' Patients and their DocumentReferences, as the system-level $export.",
                }],
            }],
            "operation": [{
                "name": "export",
                "definition": BULK_EXPORT,
                "documentation": "FHIR Bulk Data v2 (Flat FHIR). GET or POST (a Parameters resource) [base]/$export (Patient, DocumentReference and AuditEvent), [base]/Patient/$export (every patient's Patient and DocumentReferences) and [base]/Group/{id}/$export, with Prefer: respond-async (400 without). Parameters: _outputFormat (application/fhir+ndjson, application/ndjson or ndjson), _since (an instant: resources changed at or after it), _type (commas; an unsupported type is 400 unless Prefer: handling=lenient, which reports it in the error file), _typeFilter (<Type>?<that type's search parameters>, several of one type: any of them; Patient and DocumentReference). Who: a SMART backend client with system/<Type>.rs (or .read) for each type exported (without _type, the types its scopes permit), or a superuser's session; one export in progress per client (429 with Retry-After). 202 with Content-Location [base]/$export-status/{id}: 202 with X-Progress and Retry-After while it runs; 200 with the manifest (transactionTime, request, requiresAccessToken false, output and error as presigned S3 URLs, fresh on each poll, valid for a few minutes) and Expires until the job expires; 500 with an OperationOutcome if it failed; DELETE cancels it (202): its files are deleted and its status URL answers 404. A step failing on its fifth delivery, or no progress for 160 minutes, fails the job. The export is the database as of transactionTime (one snapshot), one file per resource type and chunk of 50,000 rows, split at 1 GiB.",
            }],
        }],
    }))
}
