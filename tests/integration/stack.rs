//! The local stack behaves like EKS: the API server authenticates our natively signed tokens
//! through aws-iam-authenticator (whose STS calls a SigV4-checking stand-in), maps the
//! function's role to its group, and enforces deploy/rbac.yaml.

use std::time::{Duration, SystemTime};

use crate::helpers::*;
use aws_credential_types::Credentials;
use post_signup::outside::kubernetes::token::EksTokenSigner;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

fn function_creds() -> Credentials {
    Credentials::new(
        var("AWS_ACCESS_KEY_ID"),
        var("AWS_SECRET_ACCESS_KEY"),
        Some(var("AWS_SESSION_TOKEN")),
        None,
        "stack",
    )
}

fn token(cluster: &str, creds: &Credentials, at: SystemTime) -> String {
    let signer = EksTokenSigner::new(cluster, &var("AWS_REGION")).unwrap();
    signer
        .sign(creds, at)
        .unwrap()
        .token
        .expose_secret()
        .to_owned()
}

/// Who the API server says the bearer of `token` is: (status, body).
async fn whoami(token: &str) -> (u16, Value) {
    let resp = http()
        .post(format!(
            "{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
            var("STACK_KUBE_API")
        ))
        .bearer_auth(token)
        .json(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn request(method: reqwest::Method, path: &str, token: &str) -> u16 {
    http()
        .request(method, format!("{}{path}", var("STACK_KUBE_API")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_correctly_signed_token_is_accepted_and_mapped_to_the_function_group() {
    let t = token(
        &var("EKS_CLUSTER_NAME"),
        &function_creds(),
        SystemTime::now(),
    );
    let (status, body) = whoami(&t).await;
    assert_eq!(status, 201, "{body}");
    let groups: Vec<&str> = body["status"]["userInfo"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert!(
        groups.contains(&var("STACK_FUNCTION_GROUP").as_str()),
        "{groups:?}"
    );
    assert!(
        body["status"]["userInfo"]["username"]
            .as_str()
            .unwrap()
            .starts_with("post-signup:")
    );
}

#[tokio::test]
async fn a_token_signed_with_the_wrong_secret_is_rejected() {
    let c = function_creds();
    let wrong = Credentials::new(
        c.access_key_id(),
        "not-the-secret-access-key",
        c.session_token().map(str::to_owned),
        None,
        "x",
    );
    let (status, _) = whoami(&token(&var("EKS_CLUSTER_NAME"), &wrong, SystemTime::now())).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_token_for_another_cluster_is_rejected() {
    let (status, _) = whoami(&token(
        "some-other-cluster",
        &function_creds(),
        SystemTime::now(),
    ))
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_token_signed_16_minutes_ago_is_rejected() {
    let at = SystemTime::now() - Duration::from_secs(16 * 60);
    let (status, _) = whoami(&token(&var("EKS_CLUSTER_NAME"), &function_creds(), at)).await;
    assert_eq!(status, 401);
    // The same credentials a minute ago still work: it is the age that is refused.
    let (status, _) = whoami(&token(
        &var("EKS_CLUSTER_NAME"),
        &function_creds(),
        SystemTime::now() - Duration::from_secs(60),
    ))
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn the_function_is_confined_to_its_verbs_in_its_namespace() {
    let t = token(
        &var("EKS_CLUSTER_NAME"),
        &function_creds(),
        SystemTime::now(),
    );
    let ns = var("TENANT_NAMESPACE");
    // Granted: get in the tenant namespace (404: no such object, but allowed to ask).
    assert_eq!(
        request(
            reqwest::Method::GET,
            &format!("/api/v1/namespaces/{ns}/secrets/nope"),
            &t
        )
        .await,
        404
    );
    assert_eq!(
        request(
            reqwest::Method::GET,
            &format!("/apis/apps/v1/namespaces/{ns}/deployments/nope"),
            &t
        )
        .await,
        404
    );
    // Another namespace: forbidden.
    assert_eq!(
        request(
            reqwest::Method::GET,
            "/api/v1/namespaces/default/secrets/nope",
            &t
        )
        .await,
        403
    );
    assert_eq!(
        request(
            reqwest::Method::GET,
            "/api/v1/namespaces/kube-system/secrets",
            &t
        )
        .await,
        403
    );
    // Verbs it was not granted: list, delete; and other resources.
    assert_eq!(
        request(
            reqwest::Method::GET,
            &format!("/api/v1/namespaces/{ns}/secrets"),
            &t
        )
        .await,
        403
    );
    assert_eq!(
        request(
            reqwest::Method::DELETE,
            &format!("/apis/apps/v1/namespaces/{ns}/deployments/x"),
            &t
        )
        .await,
        403
    );
    assert_eq!(
        request(
            reqwest::Method::GET,
            &format!("/api/v1/namespaces/{ns}/pods"),
            &t
        )
        .await,
        403
    );
    assert_eq!(
        request(reqwest::Method::GET, "/api/v1/namespaces", &t).await,
        403
    );
}

#[tokio::test]
async fn the_tenant_namespace_runs_under_its_guardrails() {
    let ns = var("TENANT_NAMESPACE");
    let quota = kube_admin_get(&format!(
        "/api/v1/namespaces/{ns}/resourcequotas/tenant-backends"
    ))
    .await
    .expect("deploy/tenant-guardrails.yaml's quota is applied");
    // The API server keeps quantities canonical: 2000 pods read back as "2k".
    assert_eq!(quota["spec"]["hard"]["pods"], "2k", "{quota}");
    // The quota controller counts what runs under it (tenants' pods included).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let q = kube_admin_get(&format!(
            "/api/v1/namespaces/{ns}/resourcequotas/tenant-backends"
        ))
        .await
        .unwrap();
        if q["status"]["used"]["pods"].is_string() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the quota is never counted: {q}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let limits = kube_admin_get(&format!(
        "/api/v1/namespaces/{ns}/limitranges/tenant-backends"
    ))
    .await
    .expect("the limit range");
    assert_eq!(
        limits["spec"]["limits"][0]["defaultRequest"]["cpu"], "25m",
        "{limits}"
    );
    let policy = kube_admin_get(&format!(
        "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/tenant-isolation"
    ))
    .await
    .expect("the default-deny policy");
    assert_eq!(
        policy["spec"]["podSelector"],
        json!({}),
        "every pod: {policy}"
    );
    assert_eq!(
        policy["spec"]["policyTypes"],
        json!(["Ingress", "Egress"]),
        "{policy}"
    );
}
