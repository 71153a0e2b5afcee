//! The deployment's route table, read from template.yaml: the one list of which function serves
//! which path. The harness sends each request where API Gateway would, and the other lists (the
//! local router in Cargo.toml, docs/openapi.json, each function's own router) are checked
//! against this one (`tests/api/template.rs`, `tests/api/openapi.rs`).

use std::sync::OnceLock;

use serde_yaml::Value;

/// One HTTP API route: its path pattern (`/api/v1/users/{proxy+}`), method (`ANY` or one) and
/// the binary of the function it invokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub pattern: String,
    pub method: String,
    pub function: String,
}

/// template.yaml, parsed.
pub fn template() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).expect("template.yaml is YAML")
}

/// Every `HttpApi` event of every function in template.yaml.
pub fn deployed_routes() -> &'static [Route] {
    static ROUTES: OnceLock<Vec<Route>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let template = template();
        let mut routes = Vec::new();
        for function in template["Resources"].as_mapping().unwrap().values() {
            if function["Type"].as_str() != Some("AWS::Serverless::Function") {
                continue;
            }
            let binary = function["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .expect("every function names its binary")
                .to_owned();
            let Some(events) = function["Properties"]["Events"].as_mapping() else {
                continue;
            };
            for event in events.values() {
                if event["Type"].as_str() == Some("HttpApi") {
                    routes.push(Route {
                        pattern: event["Properties"]["Path"].as_str().unwrap().to_owned(),
                        method: event["Properties"]["Method"].as_str().unwrap().to_owned(),
                        function: binary.clone(),
                    });
                }
            }
        }
        assert!(routes.len() > 10, "template.yaml has only {routes:?}");
        routes
    })
}

/// The choice among `routes` for exactly `method path` (no slash trimmed: matchit, the local
/// router, does not trim either), as API Gateway chooses: a full match before a greedy
/// `{proxy+}`, then the most literal segments. None when nothing matches.
pub fn route_for<'a>(routes: &'a [Route], method: &str, path: &str) -> Option<&'a Route> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let score = |pattern: &str| -> Option<(usize, usize)> {
        let parts: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
        let mut literal = 0;
        for (i, part) in parts.iter().enumerate() {
            if part.ends_with("+}") {
                return (segments.len() > i && !segments[i..].join("/").is_empty())
                    .then_some((0, literal));
            }
            let segment = segments.get(i)?;
            if part.starts_with('{') {
                if segment.is_empty() {
                    return None;
                }
            } else if part != segment {
                return None;
            } else {
                literal += 1;
            }
        }
        (parts.len() == segments.len()).then_some((1, literal))
    };
    routes
        .iter()
        .filter(|route| route.method == "ANY" || route.method.eq_ignore_ascii_case(method))
        .filter_map(|route| score(&route.pattern).map(|s| (s, route)))
        .max_by_key(|(s, _)| *s)
        .map(|(_, route)| route)
}

/// The function API Gateway invokes for `method path`: it routes `/x/` as `/x`, one slash
/// ignored (`/x//` reaches `/x/{proxy+}`); the query string, if any, is ignored.
pub fn function_for(method: &str, path: &str) -> Option<&'static str> {
    let path = path.split('?').next().unwrap_or(path);
    let path = match path.strip_suffix('/') {
        Some("") | None => path,
        Some(trimmed) => trimmed,
    };
    route_for(deployed_routes(), method, path).map(|route| route.function.as_str())
}

/// `cargo lambda watch`'s routes (Cargo.toml's `[workspace.metadata.lambda.watch.router]`,
/// what scripts/dev serves), in template.yaml's terms: matchit's `{*path}` is `{proxy+}`, and
/// every route takes any method.
pub fn local_routes() -> Vec<Route> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let manifest: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    manifest["workspace"]["metadata"]["lambda"]["watch"]["router"]
        .as_table()
        .expect("Cargo.toml has the local router")
        .iter()
        .map(|(pattern, function)| Route {
            pattern: pattern.replace("{*path}", "{proxy+}"),
            method: "ANY".to_owned(),
            function: function.as_str().unwrap().to_owned(),
        })
        .collect()
}

/// A concrete path of `pattern`: each `{param}` a UUID, a `{proxy+}` one segment `x`.
pub fn instance_of(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|part| match part {
            p if p.ends_with("+}") => "x",
            p if p.starts_with('{') => "00000000-0000-4000-8000-000000000000",
            p => p,
        })
        .collect::<Vec<_>>()
        .join("/")
}
