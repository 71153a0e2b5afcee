//! template.yaml, read as data: the deployment must route every request to the function that
//! serves it, grant no wildcard, keep buckets private and TLS-only, and keep every log.

use std::path::Path;

use api_tests::{
    deployed_routes, events_dir, function_for, instance_of, local_routes, route_for, template,
};
use serde_yaml::Value;

/// The value under a CloudFormation tag (`!Ref x` is a tagged value).
fn untag(value: &Value) -> &Value {
    match value {
        Value::Tagged(tagged) => untag(&tagged.value),
        other => other,
    }
}

fn resources(template: &Value) -> Vec<(String, Value)> {
    template["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

fn of_type(template: &Value, kind: &str) -> Vec<(String, Value)> {
    resources(template)
        .into_iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(kind))
        .collect()
}

/// Every HTTP event in events/, as (file, method, path).
fn http_events() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![events_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let event: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            if let Some(raw_path) = event["rawPath"].as_str() {
                out.push((
                    path.display().to_string(),
                    event["requestContext"]["http"]["method"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    raw_path.trim_end_matches('/').to_owned(),
                ));
            }
        }
    }
    out
}

#[test]
fn every_event_goes_where_it_is_filed() {
    // events/<function>/...: the deployment routes each sample to the function it is filed under.
    let events = http_events();
    assert!(events.len() > 20);
    for (file, method, path) in events {
        let filed_under = Path::new(&file)
            .strip_prefix(events_dir())
            .unwrap()
            .iter()
            .next()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            function_for(&method, &path),
            Some(filed_under.as_str()),
            "{file}: {method} {path}"
        );
    }
}

#[test]
fn the_local_router_serves_every_deployed_route_with_the_same_function() {
    // Cargo.toml's [workspace.metadata.lambda.watch.router] is checked against template.yaml's
    // routes, the one route list: each deployed route (with and without its trailing slash)
    // reaches the same function locally.
    let local = local_routes();
    for route in deployed_routes() {
        let path = instance_of(&route.pattern);
        for variant in [
            path.trim_end_matches('/').to_owned(),
            format!("{}/", path.trim_end_matches('/')),
        ] {
            let method = if route.method == "ANY" {
                "GET"
            } else {
                &route.method
            };
            let served = route_for(&local, method, &variant).unwrap_or_else(|| {
                panic!("cargo lambda watch has no route for {variant} ({route:?})")
            });
            assert_eq!(
                served.function, route.function,
                "{variant}: locally {served:?}, deployed {route:?}"
            );
        }
    }
}

#[test]
fn the_local_router_serves_nothing_the_deployment_does_not() {
    // For each local route, the route API Gateway picks for each method must invoke the same
    // function, and at least one method must be routed at all.
    for route in local_routes() {
        let path = instance_of(&route.pattern);
        let deployed: Vec<(&str, &str)> = ["GET", "POST", "PUT", "PATCH", "DELETE"]
            .into_iter()
            .filter_map(|method| function_for(method, &path).map(|f| (method, f)))
            .collect();
        assert!(
            !deployed.is_empty(),
            "cargo lambda watch routes {} to {}, template.yaml routes {path} nowhere",
            route.pattern,
            route.function
        );
        for (method, function) in deployed {
            assert_eq!(
                function, route.function,
                "{method} {path}: cargo lambda watch ({}) and template.yaml disagree",
                route.pattern
            );
        }
    }
}

fn statements(policy_holder: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for policy in policy_holder.as_sequence().into_iter().flatten() {
        let document = if policy.get("PolicyDocument").is_some() {
            &policy["PolicyDocument"]
        } else {
            policy
        };
        for statement in document["Statement"].as_sequence().into_iter().flatten() {
            out.push(statement.clone());
        }
    }
    out
}

fn strings(value: &Value) -> Vec<String> {
    match untag(value) {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn no_function_or_role_has_a_wildcard_action_or_resource() {
    let template = template();
    let mut checked = 0;
    for (name, resource) in resources(&template) {
        let policies = match resource["Type"].as_str() {
            Some("AWS::Serverless::Function") => &resource["Properties"]["Policies"],
            Some("AWS::IAM::Role") => &resource["Properties"]["Policies"],
            _ => continue,
        };
        for statement in statements(policies) {
            checked += 1;
            for action in strings(&statement["Action"]) {
                assert!(!action.contains('*'), "{name}: wildcard action {action}");
            }
            for target in strings(&statement["Resource"]) {
                assert_ne!(target, "*", "{name}: wildcard resource");
            }
        }
    }
    assert!(checked > 10, "policies were found and read");
}

#[test]
fn buckets_are_private_and_tls_only() {
    let template = template();
    let policies = of_type(&template, "AWS::S3::BucketPolicy");
    let buckets = of_type(&template, "AWS::S3::Bucket");
    assert!(buckets.len() >= 2);
    for (name, bucket) in buckets {
        let block = &bucket["Properties"]["PublicAccessBlockConfiguration"];
        for key in [
            "BlockPublicAcls",
            "BlockPublicPolicy",
            "IgnorePublicAcls",
            "RestrictPublicBuckets",
        ] {
            assert_eq!(block[key].as_bool(), Some(true), "{name}: {key}");
        }
        assert!(
            bucket["Properties"]["BucketEncryption"].is_mapping(),
            "{name}: encrypted"
        );
        let denies_http = policies.iter().any(|(_, policy)| {
            strings(&policy["Properties"]["Bucket"]) == [name.clone()]
                && statements(&Value::Sequence(vec![policy["Properties"]
                    ["PolicyDocument"]
                    .clone()]))
                .iter()
                .any(|s| {
                    s["Effect"].as_str() == Some("Deny")
                        && s["Condition"]["Bool"]["aws:SecureTransport"].as_str() == Some("false")
                })
        });
        assert!(denies_http, "{name}: a bucket policy must deny plain HTTP");
    }
}

#[test]
fn every_function_logs_to_a_group_with_retention() {
    let template = template();
    let groups = of_type(&template, "AWS::Logs::LogGroup");
    for (name, function) in of_type(&template, "AWS::Serverless::Function") {
        let group = strings(&function["Properties"]["LoggingConfig"]["LogGroup"]);
        assert_eq!(group.len(), 1, "{name}: LoggingConfig.LogGroup");
        let (_, log_group) = groups
            .iter()
            .find(|(g, _)| *g == group[0])
            .unwrap_or_else(|| panic!("{name}: log group {} is not in the template", group[0]));
        assert!(
            !log_group["Properties"]["RetentionInDays"].is_null(),
            "{name}: retention"
        );
    }
}

#[test]
fn the_console_is_served_only_through_cloudfront_over_https_with_security_headers() {
    let template = template();
    let resources = resources(&template);
    let get = |name: &str| {
        resources
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("{name} is not in the template"))
    };

    let config = &get("ConsoleDistribution")["Properties"]["DistributionConfig"];
    let origins = config["Origins"].as_sequence().unwrap();
    assert_eq!(origins.len(), 1);
    let origin = &origins[0];
    assert_eq!(
        strings(&origin["DomainName"]),
        ["ConsoleBucket.RegionalDomainName"]
    );
    assert_eq!(
        strings(&origin["OriginAccessControlId"]),
        ["ConsoleOriginAccessControl.Id"]
    );
    assert_eq!(
        origin["S3OriginConfig"]["OriginAccessIdentity"].as_str(),
        Some("")
    );
    let behavior = &config["DefaultCacheBehavior"];
    assert_eq!(
        behavior["ViewerProtocolPolicy"].as_str(),
        Some("redirect-to-https")
    );
    assert_eq!(
        strings(&behavior["ResponseHeadersPolicyId"]),
        ["ConsoleSecurityHeaders"]
    );
    // Page addresses (/patients/<id>) are answered by the app's index.html.
    let fallbacks: Vec<_> = config["CustomErrorResponses"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| (r["ErrorCode"].as_u64(), r["ResponsePagePath"].as_str()))
        .collect();
    assert_eq!(
        fallbacks,
        [
            (Some(403), Some("/index.html")),
            (Some(404), Some("/index.html"))
        ]
    );

    let headers = &get("ConsoleSecurityHeaders")["Properties"]["ResponseHeadersPolicyConfig"]
        ["SecurityHeadersConfig"];
    let csp = headers["ContentSecurityPolicy"]["ContentSecurityPolicy"]
        .as_str()
        .unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(directive), "CSP lacks {directive}: {csp}");
    }
    assert_eq!(
        headers["FrameOptions"]["FrameOption"].as_str(),
        Some("DENY")
    );
    assert_eq!(
        headers["ContentTypeOptions"]["Override"].as_bool(),
        Some(true)
    );
    assert!(
        headers["StrictTransportSecurity"]["AccessControlMaxAgeSec"].as_u64() >= Some(31_536_000)
    );

    // The bucket: readable by this distribution alone.
    let policy = &get("ConsoleBucketPolicy")["Properties"]["PolicyDocument"];
    let allows: Vec<Value> = statements(&Value::Sequence(vec![policy.clone()]))
        .into_iter()
        .filter(|s| s["Effect"].as_str() == Some("Allow"))
        .collect();
    assert_eq!(allows.len(), 1);
    assert_eq!(
        allows[0]["Principal"]["Service"].as_str(),
        Some("cloudfront.amazonaws.com")
    );
    assert_eq!(strings(&allows[0]["Action"]), ["s3:GetObject"]);
    let source = strings(&allows[0]["Condition"]["StringEquals"]["AWS:SourceArn"]);
    assert!(
        source
            .iter()
            .any(|s| s.contains("distribution/${ConsoleDistribution}")),
        "{source:?}"
    );
}

#[test]
fn without_a_frontend_host_the_api_and_bucket_allow_the_console_origin() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml"))
            .unwrap();
    let template = template();
    assert_eq!(
        template["Parameters"]["FrontendHost"]["Default"].as_str(),
        Some("")
    );
    // API CORS, bucket CORS and both password-email functions: one rule, the console's origin
    // unless FrontendHost names another.
    let rule =
        "!If [ConsoleIsFrontend, !If [HasConsoleDomain, !Sub \"https://${ConsoleDomainName}\", \
                !Sub \"https://${ConsoleDistribution.DomainName}\"], !Ref FrontendHost]";
    assert_eq!(
        text.matches(rule).count(),
        4,
        "CORS (API, bucket) and FRONTEND_HOST (auth, users)"
    );
    assert_eq!(
        text.matches("!Ref FrontendHost").count(),
        5,
        "FrontendHost is used only by the ConsoleIsFrontend condition and the rule"
    );
}

/// Every route that can reach the login handler carries the login's own limits: the explicit
/// routes and the catch-all under /login (`POST /api/v1/login/access-token//` arrives there and
/// is the login once its slashes are trimmed).
#[test]
fn every_route_that_reaches_the_login_carries_its_limit() {
    let template = template();
    let (_, api) = of_type(&template, "AWS::Serverless::HttpApi")
        .into_iter()
        .next()
        .expect("the HTTP API");
    let settings = &api["Properties"]["RouteSettings"];
    let login = &settings["POST /api/v1/login/access-token"];
    let limits = |s: &Value| {
        (
            s["ThrottlingBurstLimit"].as_u64().unwrap(),
            s["ThrottlingRateLimit"].as_f64().unwrap(),
        )
    };
    let reaching: Vec<String> = deployed_routes()
        .iter()
        .filter(|route| route.function == "auth" && route.pattern.starts_with("/api/v1/login/"))
        .map(|route| format!("{} {}", route.method, route.pattern))
        .collect();
    assert!(reaching.len() >= 3, "{reaching:?}");
    for route in reaching {
        let own = &settings[route.as_str()];
        assert!(!own.is_null(), "{route} has no limit of its own");
        assert!(
            limits(own).0 <= limits(login).0 && limits(own).1 <= limits(login).1,
            "{route}"
        );
    }
}
