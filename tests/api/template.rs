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
    // API CORS (with and without SmartAppOrigins), bucket CORS and both password-email
    // functions: one rule, the console's origin unless FrontendHost names another.
    let rule =
        "!If [ConsoleIsFrontend, !If [HasConsoleDomain, !Sub \"https://${ConsoleDomainName}\", \
                !Sub \"https://${ConsoleDistribution.DomainName}\"], !Ref FrontendHost]";
    assert_eq!(
        text.matches(rule).count(),
        5,
        "CORS (API twice, bucket) and FRONTEND_HOST (auth, users)"
    );
    assert_eq!(
        text.matches("!Ref FrontendHost").count(),
        6,
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

/// The resource `name` of `template`.
fn resource(template: &Value, name: &str) -> Value {
    template["Resources"][name].clone()
}

/// waf.yaml, parsed: the web ACL for a stack outside us-east-1.
fn waf_template() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../waf.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).expect("waf.yaml is YAML")
}

/// Each per-address rule of the web ACL: (name, limit per 60 s, the path prefix it is scoped
/// to), every one a 429 with the API's error shape.
fn rate_rules(acl: &Value) -> Vec<(String, u64, Option<String>)> {
    let mut out = Vec::new();
    for rule in acl["Properties"]["Rules"].as_sequence().unwrap() {
        let rate = &rule["Statement"]["RateBasedStatement"];
        if rate.is_null() {
            continue;
        }
        let name = rule["Name"].as_str().unwrap().to_owned();
        assert_eq!(rate["AggregateKeyType"].as_str(), Some("IP"), "{name}");
        assert_eq!(rate["EvaluationWindowSec"].as_u64(), Some(60), "{name}");
        let block = &rule["Action"]["Block"]["CustomResponse"];
        assert_eq!(block["ResponseCode"].as_u64(), Some(429), "{name}");
        let body = block["CustomResponseBodyKey"].as_str().unwrap();
        let content = acl["Properties"]["CustomResponseBodies"][body]["Content"]
            .as_str()
            .unwrap();
        let parsed: serde_json::Value = serde_json::from_str(content).unwrap();
        assert!(parsed["detail"].is_string(), "{name}: {content}");
        let scope = &rate["ScopeDownStatement"]["ByteMatchStatement"];
        let prefix = (!scope.is_null()).then(|| {
            assert!(scope["FieldToMatch"]["UriPath"].is_mapping(), "{name}");
            assert_eq!(scope["PositionalConstraint"].as_str(), Some("STARTS_WITH"));
            // %-encoded and doubled slashes are the same path to API Gateway.
            let transformations: Vec<&str> = scope["TextTransformations"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|t| t["Type"].as_str().unwrap())
                .collect();
            assert_eq!(transformations, ["URL_DECODE", "NORMALIZE_PATH"], "{name}");
            scope["SearchString"].as_str().unwrap().to_owned()
        });
        out.push((name, rate["Limit"].as_u64().unwrap(), prefix));
    }
    out
}

#[test]
fn every_per_address_limit_exists_with_its_limit_and_scope() {
    let template = template();
    let acl = resource(&template, "ApiWebAcl");
    assert_eq!(acl["Properties"]["Scope"].as_str(), Some("CLOUDFRONT"));
    assert_eq!(acl["Condition"].as_str(), Some("CreateWebAcl"));
    let rules = rate_rules(&acl);
    let expected = [
        ("login-per-address", 60, Some("/api/v1/login/")),
        (
            "recovery-per-address",
            10,
            Some("/api/v1/password-recovery"),
        ),
        ("reset-per-address", 10, Some("/api/v1/reset-password")),
        ("signup-per-address", 10, Some("/api/v1/users/signup")),
        ("smart-per-address", 300, Some("/api/v1/smart")),
        ("api-per-address", 1200, None),
    ];
    let got: Vec<(&str, u64, Option<&str>)> = rules
        .iter()
        .map(|(n, l, p)| (n.as_str(), *l, p.as_deref()))
        .collect();
    assert_eq!(got, expected);

    // One address stays well under each route's own limit, shared by every client.
    let api = &of_type(&template, "AWS::Serverless::HttpApi")[0].1["Properties"];
    let per_second = |route: &str| {
        let settings = if route == "default" {
            &api["DefaultRouteSettings"]
        } else {
            &api["RouteSettings"][route]
        };
        settings["ThrottlingRateLimit"].as_f64().unwrap()
    };
    for (rule, route) in [
        ("login-per-address", "POST /api/v1/login/access-token"),
        (
            "recovery-per-address",
            "POST /api/v1/password-recovery/{email}",
        ),
        ("reset-per-address", "ANY /api/v1/reset-password"),
        ("smart-per-address", "ANY /api/v1/smart/{proxy+}"),
        ("api-per-address", "default"),
    ] {
        let limit = rules.iter().find(|(n, _, _)| n == rule).unwrap().1 as f64;
        assert!(
            limit / 60.0 <= per_second(route) / 5.0,
            "{rule}: {limit} a minute against {route}'s {} a second",
            per_second(route)
        );
    }

    // Every route that logs in, sends a recovery email, resets a password or signs up is under
    // a stricter rule (the auth function's other routes: logout and the JWK Set).
    let strict: Vec<&str> = rules.iter().filter_map(|(_, _, p)| p.as_deref()).collect();
    let sensitive: Vec<String> = deployed_routes()
        .iter()
        .filter(|r| {
            (r.function == "auth"
                && !["/api/v1/logout", "/api/v1/.well-known/jwks.json"]
                    .contains(&r.pattern.as_str()))
                || r.pattern.starts_with("/api/v1/users/signup")
        })
        .map(|r| instance_of(&r.pattern))
        .chain(["/api/v1/users/signup".to_owned()])
        .collect();
    assert!(sensitive.len() >= 8, "{sensitive:?}");
    for path in sensitive {
        assert!(
            strict.iter().any(|prefix| path.starts_with(prefix)),
            "{path}: no stricter per-address rule"
        );
    }

    // The managed groups that refuse nothing a JSON or FHIR client sends; not the core rule set
    // (its 8 KB body limit refuses FHIR resources) nor the SQL or anonymous-IP ones.
    let managed: Vec<&str> = acl["Properties"]["Rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|r| r["Statement"]["ManagedRuleGroupStatement"]["Name"].as_str())
        .collect();
    assert_eq!(
        managed,
        [
            "AWSManagedRulesAmazonIpReputationList",
            "AWSManagedRulesKnownBadInputsRuleSet"
        ]
    );
}

#[test]
fn the_web_acl_guards_the_distribution_in_front_of_the_http_api() {
    let template = template();
    let distribution = resource(&template, "ApiDistribution");
    let config = &distribution["Properties"]["DistributionConfig"];
    // The stack's web ACL in us-east-1, else the one WebAclArn names (required elsewhere).
    let acl = strings(&config["WebACLId"]);
    assert!(acl.contains(&"ApiWebAcl.Arn".to_owned()), "{acl:?}");
    assert!(acl.contains(&"WebAclArn".to_owned()), "{acl:?}");
    let rule = &template["Rules"]["WebAclOutsideUsEast1"];
    assert_eq!(strings(&rule["Assertions"][0]["Assert"]), ["WebAclArn", ""]);
    assert_eq!(
        strings(&template["Conditions"]["IsUsEast1"]),
        ["AWS::Region", "us-east-1"]
    );
    // Per-address limits need addresses a client cannot multiply: IPv4 only.
    assert_eq!(config["IPV6Enabled"].as_bool(), Some(false));

    let origins = config["Origins"].as_sequence().unwrap();
    assert_eq!(origins.len(), 1);
    let origin = &origins[0];
    assert!(
        strings(&origin["DomainName"])[0].starts_with("${HttpApi}.execute-api."),
        "{origin:?}"
    );
    assert_eq!(
        origin["CustomOriginConfig"]["OriginProtocolPolicy"].as_str(),
        Some("https-only")
    );
    // The origin secret: CloudFront sends the header the edge checks, its value resolved from
    // Secrets Manager at deploy time, never written in the template.
    let headers = origin["OriginCustomHeaders"].as_sequence().unwrap();
    assert_eq!(headers.len(), 1);
    assert_eq!(
        headers[0]["HeaderName"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase(),
        edge::http::ORIGIN_SECRET_HEADER
    );
    assert_eq!(
        strings(&headers[0]["HeaderValue"]),
        ["{{resolve:secretsmanager:${OriginSecret}:SecretString:value}}"]
    );
    let secret = resource(&template, "OriginSecret");
    assert_eq!(
        secret["Properties"]["GenerateSecretString"]["GenerateStringKey"].as_str(),
        Some("value")
    );
    assert_eq!(strings(&secret["Properties"]["KmsKeyId"]), ["DataKey"]);

    let behavior = &config["DefaultCacheBehavior"];
    assert_eq!(
        behavior["ViewerProtocolPolicy"].as_str(),
        Some("https-only")
    );
    assert_eq!(strings(&behavior["AllowedMethods"]).len(), 7);
    // CachingDisabled, and AllViewerExceptHostHeader (Authorization, every query string and
    // header but Host, CloudFront-Viewer-Address).
    assert_eq!(
        behavior["CachePolicyId"].as_str(),
        Some("4135ea2d-6df8-44a3-9df3-4b5a84be39ad")
    );
    assert_eq!(
        behavior["OriginRequestPolicyId"].as_str(),
        Some("b689b0a8-53d0-40ab-baf2-68738e2966ac")
    );
    let function = &behavior["FunctionAssociations"][0];
    assert_eq!(function["EventType"].as_str(), Some("viewer-request"));
    assert_eq!(
        strings(&function["FunctionARN"]),
        ["ApiViewerHost.FunctionARN"]
    );
    let code = resource(&template, "ApiViewerHost")["Properties"]["FunctionCode"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        code.contains(&format!("'{}'", edge::http::VIEWER_HOST_HEADER)),
        "{code}"
    );

    // Every HTTP function reads the origin secret at cold start, and may.
    let globals = &template["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(strings(&globals["ORIGIN_SECRET_ARN"]), ["OriginSecret"]);
    let mut http_functions = 0;
    for (name, function) in of_type(&template, "AWS::Serverless::Function") {
        let events = function["Properties"]["Events"].as_mapping();
        let serves_http = events
            .into_iter()
            .flatten()
            .any(|(_, e)| e["Type"].as_str() == Some("HttpApi"));
        if !serves_http {
            continue;
        }
        http_functions += 1;
        assert!(
            statements(&function["Properties"]["Policies"])
                .iter()
                .any(
                    |s| strings(&s["Action"]) == ["secretsmanager:GetSecretValue"]
                        && strings(&s["Resource"]).contains(&"OriginSecret".to_owned())
                ),
            "{name} cannot read the origin secret"
        );
    }
    assert_eq!(http_functions, 7);

    // What the web ACL blocks is logged, kept, encrypted, and without tokens or search text.
    let logs = resource(&template, "ApiWebAclLogs");
    assert!(strings(&logs["Properties"]["LogGroupName"])[0].starts_with("aws-waf-logs-"));
    assert!(!logs["Properties"]["RetentionInDays"].is_null());
    assert_eq!(strings(&logs["Properties"]["KmsKeyId"]), ["DataKey.Arn"]);
    let logging = resource(&template, "ApiWebAclLogging");
    assert_eq!(
        strings(&logging["Properties"]["ResourceArn"]),
        ["ApiWebAcl.Arn"]
    );
    let redacted = &logging["Properties"]["RedactedFields"];
    assert_eq!(
        redacted[0]["SingleHeader"]["Name"].as_str(),
        Some("authorization")
    );
    assert!(redacted[1]["QueryString"].is_mapping());

    // Clients are given the distribution's address, not execute-api's.
    let url = strings(&template["Outputs"]["ApiUrl"]["Value"]);
    assert!(
        url.contains(&"https://${ApiDistribution.DomainName}".to_owned()),
        "{url:?}"
    );
}

#[test]
fn waf_yaml_holds_the_same_web_acl_for_stacks_outside_us_east_1() {
    let template = template();
    let waf = waf_template();
    let ours = resource(&template, "ApiWebAcl");
    let theirs = resource(&waf, "ApiWebAcl");
    assert_eq!(
        ours["Properties"], theirs["Properties"],
        "waf.yaml's ApiWebAcl differs from template.yaml's"
    );
    let ours = resource(&template, "ApiWebAclLogging");
    let theirs = resource(&waf, "ApiWebAclLogging");
    assert_eq!(ours["Properties"], theirs["Properties"]);
    assert_eq!(
        strings(&waf["Rules"]["OnlyInUsEast1"]["Assertions"][0]["Assert"]),
        ["AWS::Region", "us-east-1"]
    );
    assert_eq!(
        strings(&waf["Outputs"]["WebAclArn"]["Value"]),
        ["ApiWebAcl.Arn"]
    );
}

#[test]
fn attachments_are_encrypted_with_the_stack_key_and_every_role_using_them_may_use_it() {
    let template = template();
    let bucket = resource(&template, "AttachmentsBucket");
    let rule = &bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0];
    assert_eq!(
        rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"].as_str(),
        Some("aws:kms")
    );
    assert_eq!(
        strings(&rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]),
        ["DataKey.Arn"]
    );
    assert_eq!(rule["BucketKeyEnabled"].as_bool(), Some(true));
    // The key policy lets the account's IAM policies grant its use.
    let key_policy = &resource(&template, "DataKey")["Properties"]["KeyPolicy"];
    assert!(statements(&Value::Sequence(vec![key_policy.clone()]))
        .iter()
        .any(|s| strings(&s["Principal"]["AWS"])
            .iter()
            .any(|p| p.ends_with(":root"))
            && strings(&s["Action"]) == ["kms:*"]));

    let mut object_roles = 0;
    for (name, function) in of_type(&template, "AWS::Serverless::Function") {
        let statements = statements(&function["Properties"]["Policies"]);
        let on_objects: Vec<String> = statements
            .iter()
            .filter(|s| {
                strings(&s["Resource"])
                    .iter()
                    .any(|r| r.contains("carevault-attachments-") && r.ends_with("/patients/*"))
            })
            .flat_map(|s| strings(&s["Action"]))
            .collect();
        if on_objects.is_empty() {
            continue;
        }
        object_roles += 1;
        let kms_actions = |action: &str| -> Vec<Value> {
            statements
                .iter()
                .filter(|s| strings(&s["Action"]).iter().any(|a| a == action))
                .cloned()
                .collect()
        };
        // Every KMS grant names the stack's key, never a wildcard.
        for statement in statements
            .iter()
            .filter(|s| strings(&s["Action"]).iter().any(|a| a.starts_with("kms:")))
        {
            assert_eq!(strings(&statement["Resource"]), ["DataKey.Arn"], "{name}");
        }
        let reads = on_objects.iter().any(|a| a == "s3:GetObject");
        let writes = on_objects.iter().any(|a| a == "s3:PutObject");
        if reads || writes {
            assert!(
                !kms_actions("kms:Decrypt").is_empty(),
                "{name}: kms:Decrypt"
            );
        }
        // Data keys for S3 objects (a queue's are checked apart).
        let generate: Vec<Value> = kms_actions("kms:GenerateDataKey")
            .into_iter()
            .filter(|s| {
                !strings(&s["Condition"]["StringEquals"]["kms:ViaService"])
                    .iter()
                    .any(|via| via.starts_with("sqs."))
            })
            .collect();
        if writes {
            assert_eq!(generate.len(), 1, "{name}: kms:GenerateDataKey");
            assert_eq!(
                strings(&generate[0]["Condition"]["StringEquals"]["kms:ViaService"]),
                ["s3.${AWS::Region}.amazonaws.com"],
                "{name}: only through S3"
            );
        } else {
            assert!(generate.is_empty(), "{name} writes no object");
        }
    }
    // attachments, fhir, patients (deletes) and attachment-events.
    assert_eq!(object_roles, 4);
}

#[test]
fn each_function_has_its_own_reserved_concurrency() {
    let template = template();
    assert!(template["Globals"]["Function"]["ReservedConcurrentExecutions"].is_null());
    assert_eq!(
        template["Parameters"]["ConcurrencyProfile"]["Default"].as_str(),
        Some("standard")
    );
    let profiles = template["Mappings"]["ReservedConcurrency"]
        .as_mapping()
        .unwrap();
    let functions = of_type(&template, "AWS::Serverless::Function");
    assert_eq!(functions.len(), 10);
    for (name, function) in &functions {
        let reserved = match &function["Properties"]["ReservedConcurrentExecutions"] {
            Value::Tagged(tagged) => tagged.value.clone(),
            other => panic!("{name}: ReservedConcurrentExecutions is {other:?}"),
        };
        assert_eq!(strings(&reserved[0]), ["HasReservedConcurrency"], "{name}");
        let lookup = strings(&reserved[1]);
        assert_eq!(
            lookup[..2],
            ["ReservedConcurrency", "ConcurrencyProfile"],
            "{name}"
        );
        for (profile, sizes) in profiles {
            assert!(
                sizes[lookup[2].as_str()].as_u64() >= Some(1),
                "{name}: {lookup:?} in {profile:?}"
            );
        }
    }
    // CloudFormation resolves the FindInMap of an If's branch not taken: every allowed
    // profile, `none` included, needs its row.
    for allowed in template["Parameters"]["ConcurrencyProfile"]["AllowedValues"]
        .as_sequence()
        .unwrap()
    {
        assert!(profiles.contains_key(allowed), "no row for {allowed:?}");
    }
    for (profile, sizes) in profiles {
        if profile.as_str() == Some("none") {
            continue;
        }
        let size = |key: &str| sizes[key].as_u64().unwrap();
        let total: u64 = sizes
            .as_mapping()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        // The default account limit is 1,000, of which 100 stay unreserved.
        assert!(total <= 900, "{profile:?}: {total}");
        // One migration at a time; the groups clinicians wait on keep the most.
        assert_eq!(size("Migrate"), 1);
        assert!(size("Patients") > size("Auth") && size("Fhir") > size("Auth"));
    }
}

/// Each function group, its template resources' prefix and its database role's group name.
const FUNCTION_GROUPS: [(&str, &str); 9] = [
    ("Utils", "utils"),
    ("Auth", "auth"),
    ("Users", "users"),
    ("Patients", "patients"),
    ("Fhir", "fhir"),
    ("Attachments", "attachments"),
    ("AttachmentEvents", "attachment_events"),
    ("Audit", "audit"),
    ("BulkExport", "bulk_export"),
];

#[test]
fn each_function_logs_in_to_the_database_as_its_own_group_only() {
    let template = template();
    let resources = &template["Resources"];
    assert!(
        template["Globals"]["Function"]["Environment"]["Variables"]
            .get("DATABASE_SECRET_ARN")
            .is_none(),
        "no database login shared by every function"
    );
    let logins: Vec<String> = FUNCTION_GROUPS
        .iter()
        .map(|(prefix, _)| format!("Database{prefix}Secret"))
        .collect();
    let migrate = &resources["MigrateFunction"]["Properties"];
    let made_by_migrate =
        strings(&migrate["Environment"]["Variables"]["DATABASE_FUNCTION_SECRET_ARNS"]).join(" ");
    let proxy_logins: Vec<String> = resources["DatabaseProxy"]["Properties"]["Auth"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|auth| strings(&auth["SecretArn"]))
        .collect();
    for ((prefix, group), own) in FUNCTION_GROUPS.iter().zip(&logins) {
        let function = &resources[format!("{prefix}Function").as_str()]["Properties"];
        let secret_of = strings(&function["Environment"]["Variables"]["DATABASE_SECRET_ARN"]);
        assert!(
            secret_of.contains(own),
            "{prefix}Function logs in with {secret_of:?}"
        );
        let username = resources[own.as_str()]["Properties"]["GenerateSecretString"]
            ["SecretStringTemplate"]
            .as_str()
            .unwrap();
        assert!(
            username.contains(&format!("\"carevault_{group}_login\"")),
            "{own}: {username}"
        );
        assert!(
            made_by_migrate.contains(&format!("\"{group}\": \"${{{own}}}\"")),
            "migrate makes {own} a member of carevault_{group}: {made_by_migrate}"
        );
        assert!(proxy_logins.contains(own), "RDS Proxy accepts {own}");
        let readable: Vec<String> = statements(&function["Policies"])
            .iter()
            .flat_map(|statement| strings(&statement["Resource"]))
            .collect();
        for other in logins.iter().filter(|other| *other != own) {
            assert!(
                !readable.contains(other),
                "{prefix}Function may read another group's login {other}"
            );
        }
    }
}

/// The export queue is encrypted with the stack's key: whoever sends to it makes a data key
/// through SQS (without it, every send fails in AWS, and nothing local would tell).
#[test]
fn whoever_sends_to_the_encrypted_export_queue_may_make_its_data_keys() {
    let template = template();
    let queue = resource(&template, "ExportQueue");
    assert_eq!(strings(&queue["Properties"]["KmsMasterKeyId"]), ["DataKey"]);
    let mut senders = Vec::new();
    for (name, function) in of_type(&template, "AWS::Serverless::Function") {
        let statements = statements(&function["Properties"]["Policies"]);
        let sends = statements.iter().any(|s| {
            strings(&s["Action"]).iter().any(|a| a == "sqs:SendMessage")
                && strings(&s["Resource"]) == ["ExportQueue.Arn"]
        });
        if !sends {
            continue;
        }
        senders.push(name.clone());
        assert!(
            statements
                .iter()
                .any(|s| strings(&s["Action"]) == ["kms:GenerateDataKey"]
                    && strings(&s["Resource"]) == ["DataKey.Arn"]
                    && strings(&s["Condition"]["StringEquals"]["kms:ViaService"])
                        == ["sqs.${AWS::Region}.amazonaws.com"]),
            "{name} sends to the export queue without kms:GenerateDataKey through SQS"
        );
    }
    senders.sort();
    assert_eq!(senders, ["BulkExportFunction", "FhirFunction"]);
    // The worker's mapping never invokes beyond its reserved executions.
    let worker = resource(&template, "BulkExportFunction");
    let mapping = &worker["Properties"]["Events"]["Jobs"]["Properties"];
    assert_eq!(
        mapping["FunctionResponseTypes"][0].as_str(),
        Some("ReportBatchItemFailures")
    );
    assert!(!mapping["ScalingConfig"]["MaximumConcurrency"].is_null());
}
