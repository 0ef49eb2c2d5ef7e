//! Transient faults are retried inside the budget: a proxy of our own in front of RabbitMQ and
//! of the API server resets or refuses the first connections, and the AWS stand-in throttles
//! once. Each time the tenant still completes in one invocation, and the report shows the retry.

use post_signup::ops::provision::{Outcome, Report};
use post_signup::tenant::TenantId;
use serde_json::json;

use crate::helpers::*;
use crate::servers::{Fault, FaultProxy};

async fn provision(app: &post_signup::lambda::app::App, tenant: &TenantId) -> Report {
    provision_once(app, tenant)
        .await
        .unwrap_or_else(|e| panic!("the tenant completes despite the fault: {e}"))
}

fn attempts(report: &Report, prefix: &str) -> u32 {
    report
        .steps
        .iter()
        .filter(|s| s.step.starts_with(prefix))
        .map(|s| s.attempts)
        .max()
        .unwrap()
}

/// Provisions a fresh tenant with the app's settings `overrides` pointing at `proxy`, checks
/// that every fault was served and the tenant is complete, and returns the report.
async fn through(proxy: FaultProxy, served: usize, overrides: &[(&str, &str)]) -> Report {
    let app = app_with(overrides).await;
    let tenant = fresh_tenant();
    let report = provision(&app, &tenant).await;
    assert_eq!(proxy.faulted(), served, "every fault was served");
    let traces = traces_of(&tenant).await;
    assert_eq!(traces.len(), 5, "complete: {traces:?}");
    report
}

async fn through_rabbitmq_proxy(faults: Vec<Fault>) -> Report {
    let n = faults.len();
    let proxy = FaultProxy::http(&var("RABBITMQ_MANAGEMENT_URL"), faults).await;
    let url = proxy.url.clone();
    through(proxy, n, &[("RABBITMQ_MANAGEMENT_URL", &url)]).await
}

async fn through_apiserver_proxy(faults: Vec<Fault>) -> Report {
    let n = faults.len();
    let proxy = FaultProxy::kube_apiserver(faults).await;
    let url = proxy.url.clone();
    through(
        proxy,
        n,
        &[("EKS_ENDPOINT", &url), ("EKS_CA_DATA", &stack_ca_data())],
    )
    .await
}

#[tokio::test]
async fn rabbitmq_first_connection_reset_is_retried() {
    let report = through_rabbitmq_proxy(vec![Fault::Reset]).await;
    assert_eq!(attempts(&report, "rabbitmq."), 2, "{report:?}");
}

#[tokio::test]
async fn rabbitmq_first_answer_503_is_retried() {
    let report = through_rabbitmq_proxy(vec![Fault::rabbitmq(503, None)]).await;
    assert_eq!(attempts(&report, "rabbitmq."), 2, "{report:?}");
}

#[tokio::test]
async fn rabbitmq_429_retry_after_is_honoured() {
    let report = through_rabbitmq_proxy(vec![Fault::rabbitmq(429, Some(1))]).await;
    let retried = report
        .steps
        .iter()
        .find(|s| s.step.starts_with("rabbitmq.") && s.attempts == 2)
        .expect("one rabbitmq step retried");
    assert!(
        retried.duration_ms.unwrap() >= 1000.0,
        "waited the Retry-After second: {retried:?}"
    );
}

#[tokio::test]
async fn kubernetes_first_connection_reset_is_retried() {
    let report = through_apiserver_proxy(vec![Fault::Reset]).await;
    assert_eq!(attempts(&report, "kubernetes."), 2, "{report:?}");
}

#[tokio::test]
async fn kubernetes_first_answer_503_is_retried() {
    let report = through_apiserver_proxy(vec![Fault::kubernetes(503, None)]).await;
    assert_eq!(attempts(&report, "kubernetes."), 2, "{report:?}");
}

#[tokio::test]
async fn kubernetes_429_retry_after_is_honoured() {
    let report = through_apiserver_proxy(vec![Fault::kubernetes(429, Some(1))]).await;
    let retried = report
        .steps
        .iter()
        .find(|s| s.step.starts_with("kubernetes.") && s.attempts == 2)
        .expect("one kubernetes step retried");
    assert!(retried.duration_ms.unwrap() >= 1000.0, "{retried:?}");
}

#[tokio::test]
async fn a_permanent_kubernetes_refusal_is_not_retried() {
    let proxy = FaultProxy::kube_apiserver(vec![Fault::kubernetes(422, None); 2]).await;
    let app = app_with(&[
        ("EKS_ENDPOINT", &proxy.url),
        ("EKS_CA_DATA", &stack_ca_data()),
    ])
    .await;
    let err = provision_once(&app, &fresh_tenant())
        .await
        .expect_err("422 fails");
    let failed: Vec<_> = err
        .report
        .steps
        .iter()
        .filter(|s| s.outcome == Outcome::Failed)
        .collect();
    // The Secret is refused once; the Deployment, which waits for it, is never sent.
    assert_eq!(failed.len(), 1, "{err}");
    assert!(failed.iter().all(|s| s.attempts == 1), "{err}");
    assert!(
        !err.report
            .steps
            .iter()
            .any(|s| s.step == "kubernetes.deployment"),
        "{err}"
    );
}

#[tokio::test]
async fn secrets_manager_throttling_once_is_retried() {
    let tenant = fresh_tenant();
    aws_fault(json!({
        "target": "secretsmanager.CreateSecret",
        "match": tenant.as_str(),
        "count": 1,
        "status": 400,
        "error": "ThrottlingException",
    }))
    .await;
    let app = app().await;
    let report = provision(&app, &tenant).await;
    assert_eq!(attempts(&report, "secrets-manager."), 2, "{report:?}");
    assert!(tenant_secret_json(&tenant).await.is_some());
}
