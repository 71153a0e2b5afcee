//! SMART on FHIR: registered clients, scopes, and the authorizations granted to them (codes,
//! grants, refresh tokens, launches, assertion ids). The auth function's authorization server
//! and the FHIR function's scope check both call these.

pub mod clients;
pub mod grants;
pub mod scopes;
