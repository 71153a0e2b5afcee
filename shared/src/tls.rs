//! rustls (never OpenSSL) with aws-lc-rs, the provider the AWS SDK already links, and the
//! public web roots: RDS Proxy and CloudFormation's S3 URLs chain to Amazon's public roots.

use std::sync::Arc;

pub fn client_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("aws-lc-rs supports rustls' default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth()
}
