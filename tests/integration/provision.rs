//! The function against the real local stack: what a sign-up creates, that retries and
//! concurrent duplicates converge, that bad events change nothing, and how each outside
//! system's failure is reported.

use std::time::Duration;

use crate::helpers::*;
use crate::servers::{answering, closed_port, silent};
use lambda_runtime::{Context, LambdaEvent};
use post_signup::lambda::trigger::{self, Finish};
use post_signup::ops::provision::Outcome;
use post_signup::outside::error::{FailureKind, System};
use post_signup::tenant::TenantId;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

/// One invocation of the handler that must finish inside the trigger (a hand-off is an error
/// here: these tests are about what the trigger itself provisions).
async fn invoke(app: &post_signup::lambda::app::App, event: &Value) -> Result<Value, String> {
    match trigger::handle_reporting(app, LambdaEvent::new(event.clone(), Context::default())).await
    {
        Ok((_, Finish::HandedOff)) => Err("handed off instead of provisioned".to_owned()),
        Ok((value, _)) => Ok(value),
        Err(e) => Err(e.to_string()),
    }
}

/// The password a tenant got, checked to be the same in all three places.
async fn assert_one_password(tenant: &TenantId) -> String {
    let kube = kube_secret_data(tenant)
        .await
        .expect("kubernetes secret exists");
    let sm = tenant_secret_json(tenant)
        .await
        .expect("secrets manager entry exists");
    assert_eq!(kube["RABBITMQ_USERNAME"], tenant.as_str());
    assert_eq!(kube["RABBITMQ_VHOST"], tenant.as_str());
    assert_eq!(sm["username"], tenant.as_str());
    assert_eq!(sm["vhost"], tenant.as_str());
    assert_eq!(
        sm["password"].as_str().unwrap(),
        kube["RABBITMQ_PASSWORD"],
        "Secrets Manager and Kubernetes agree"
    );
    assert_eq!(sm["amqp_url"].as_str().unwrap(), kube["AMQP_URL"]);
    // RabbitMQ holds the same password: logging in with it proves it.
    amqp_login(&kube["AMQP_URL"])
        .await
        .expect("the stored AMQP_URL logs in");
    kube["RABBITMQ_PASSWORD"].clone()
}

#[tokio::test]
async fn a_sign_up_gets_a_complete_tenant_and_the_event_back_unchanged() {
    let app = app().await;
    let tenant = fresh_tenant();
    let event = signup_event(tenant.as_str());
    let returned = invoke(&app, &event).await.expect("provisioned");
    assert_eq!(returned, event, "Cognito gets its event back unchanged");

    let user = rabbit_admin_get(&format!("users/{tenant}"))
        .await
        .expect("rabbitmq user");
    assert_eq!(user["tags"], json!([]), "the tenant user has no tags");
    rabbit_admin_get(&format!("vhosts/{tenant}"))
        .await
        .expect("rabbitmq vhost");
    let perm = rabbit_admin_get(&format!("permissions/{tenant}/{tenant}"))
        .await
        .expect("permission");
    assert_eq!(
        (
            perm["configure"].as_str(),
            perm["write"].as_str(),
            perm["read"].as_str()
        ),
        (Some(".*"), Some(".*"), Some(".*"))
    );
    let perms = rabbit_admin_get(&format!("users/{tenant}/permissions"))
        .await
        .unwrap();
    assert_eq!(
        perms.as_array().unwrap().len(),
        1,
        "the tenant may use its own vhost only: {perms}"
    );

    let ns = var("TENANT_NAMESPACE");
    let dep = kube_admin_get(&format!(
        "/apis/apps/v1/namespaces/{ns}/deployments/{}",
        tenant.deployment_name()
    ))
    .await
    .expect("deployment");
    assert_eq!(
        dep["metadata"]["labels"]["post-signup/tenant"],
        tenant.as_str()
    );
    assert_eq!(
        dep["metadata"]["managedFields"][0]["manager"], "post-signup",
        "server-side applied by one manager"
    );
    let container = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"],
        tenant.secret_name()
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let secret = kube_admin_get(&format!(
        "/api/v1/namespaces/{ns}/secrets/{}",
        tenant.secret_name()
    ))
    .await
    .unwrap();
    assert_eq!(
        secret["metadata"]["labels"]["post-signup/tenant"],
        tenant.as_str()
    );
    assert_one_password(&tenant).await;
}

#[tokio::test]
async fn tenants_cannot_open_each_others_vhosts() {
    let app = app().await;
    let (a, b) = (fresh_tenant(), fresh_tenant());
    invoke(&app, &signup_event(a.as_str())).await.unwrap();
    invoke(&app, &signup_event(b.as_str())).await.unwrap();
    let a_url = kube_secret_data(&a).await.unwrap()["AMQP_URL"].clone();
    amqp_login(&a_url).await.expect("a opens its own vhost");
    let into_b = a_url.replace(&format!("/{a}"), &format!("/{b}"));
    assert_ne!(into_b, a_url);
    let err = amqp_login(&into_b)
        .await
        .expect_err("a must not open b's vhost");
    assert!(
        err.to_lowercase().contains("access")
            || err.contains("NOT_ALLOWED")
            || err.contains("refused"),
        "{err}"
    );
}

#[tokio::test]
async fn forgot_password_does_nothing() {
    let app = app().await;
    let tenant = fresh_tenant();
    let mut event = signup_event(tenant.as_str());
    event["triggerSource"] = json!("PostConfirmation_ConfirmForgotPassword");
    assert_eq!(invoke(&app, &event).await.unwrap(), event);
    assert_eq!(traces_of(&tenant).await, Vec::<&str>::new());
}

#[tokio::test]
async fn a_retry_converges_on_the_same_tenant() {
    let app = app().await;
    let tenant = fresh_tenant();
    let event = signup_event(tenant.as_str());
    invoke(&app, &event).await.unwrap();
    let first = assert_one_password(&tenant).await;
    // A retry from a fresh container (a new cold start) must arrive at the same password.
    let other_container = app_with(&[]).await;
    invoke(&other_container, &event).await.unwrap();
    assert_eq!(assert_one_password(&tenant).await, first);
}

#[tokio::test]
async fn ten_concurrent_duplicates_all_succeed_with_one_password() {
    let app = app().await;
    let tenant = fresh_tenant();
    let event = signup_event(tenant.as_str());
    let runs = futures::future::join_all((0..10).map(|_| invoke(&app, &event))).await;
    for (i, r) in runs.iter().enumerate() {
        assert!(r.is_ok(), "run {i}: {r:?}");
    }
    assert_one_password(&tenant).await;
    let versions = secrets_manager()
        .await
        .list_secret_version_ids()
        .secret_id(tenant.secrets_manager_name(&var("TENANT_SECRET_PREFIX")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        versions.versions().len(),
        1,
        "duplicates write no extra versions"
    );
}

#[tokio::test]
async fn bad_events_are_refused_and_change_nothing() {
    let app = app().await;
    let tenant = fresh_tenant();
    let good = signup_event(tenant.as_str());
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut e = good.clone();
    e["request"]["userAttributes"]
        .as_object_mut()
        .unwrap()
        .remove("sub");
    cases.push(("missing sub", e));
    let mut e = good.clone();
    e["request"]["userAttributes"]["sub"] = json!("");
    cases.push(("empty sub", e));
    let mut e = good.clone();
    e["request"]["userAttributes"]["sub"] = json!(format!("{tenant}x"));
    cases.push(("non-UUID sub", e));
    let mut e = good.clone();
    e["triggerSource"] = json!("PreSignUp_SignUp");
    cases.push(("wrong trigger", e));
    cases.push(("not an object", json!("PostConfirmation_ConfirmSignUp")));
    let mut e = good.clone();
    e["request"] = json!("nope");
    cases.push(("request not an object", e));
    for (what, event) in cases {
        let err = invoke(&app, &event).await.expect_err(what);
        assert!(!err.is_empty(), "{what}");
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
    assert_eq!(
        traces_of(&tenant).await,
        Vec::<&str>::new(),
        "nothing was created"
    );
}

// --- failures of each outside system ------------------------------------------------------

async fn provision_err(
    app: &post_signup::lambda::app::App,
    tenant: &TenantId,
) -> post_signup::ops::provision::ProvisionError {
    provision_once(app, tenant)
        .await
        .expect_err("provisioning must fail")
}

async fn assert_no_secret(text: &str, tenant: &TenantId, app: &post_signup::lambda::app::App) {
    let password = app
        .provisioner()
        .await
        .unwrap()
        .brokers
        .first()
        .await
        .unwrap()
        .tenant_credentials(tenant, 0)
        .password;
    assert!(
        !text.contains(password.expose_secret()),
        "tenant password leaked: {text}"
    );
    assert!(
        !text.contains(&var("RABBITMQ_ADMIN_PASSWORD")),
        "admin password leaked: {text}"
    );
    assert!(
        !text.contains(&var("AWS_SECRET_ACCESS_KEY")),
        "AWS secret leaked: {text}"
    );
    assert!(!text.contains("k8s-aws-v1."), "EKS token leaked: {text}");
}

/// The cold-start error of an app with these settings, with its cause chain.
async fn init_error(
    settings: post_signup::lambda::settings::Settings,
    aws: &aws_config::SdkConfig,
) -> String {
    match post_signup::lambda::app::App::init_with(settings, aws).await {
        Ok(_) => panic!("the cold start must fail"),
        Err(e) => format!("{e:#}"),
    }
}

async fn put_admin_secret(value: &str) -> String {
    let id = format!("post-signup/test-admin-{}", fresh_tenant());
    secrets_manager()
        .await
        .create_secret()
        .name(&id)
        .secret_string(value)
        .send()
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn rabbitmq_401_names_the_system_and_step() {
    let key = "x".repeat(40);
    let id = put_admin_secret(&json!({"username": var("RABBITMQ_ADMIN_USERNAME"), "password": "wrong-pass-4711", "tenant_password_key": key}).to_string()).await;
    let app = app_with(&[("RABBITMQ_ADMIN_SECRET_ID", &id)]).await;
    let tenant = fresh_tenant();
    let err = provision_err(&app, &tenant).await;
    let rabbit: Vec<_> = err
        .failures
        .iter()
        .filter(|f| f.system == System::Rabbitmq)
        .collect();
    assert!(!rabbit.is_empty(), "{err}");
    assert!(
        rabbit.iter().all(|f| f.kind == FailureKind::Unauthorized),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("rabbitmq: create user") && text.contains("401"),
        "{text}"
    );
    assert!(!text.contains("wrong-pass-4711"));
    assert_no_secret(&text, &tenant, &app).await;
}

#[tokio::test]
async fn kubernetes_403_outside_the_granted_namespace() {
    let app = app_with(&[("TENANT_NAMESPACE", "default")]).await;
    let tenant = fresh_tenant();
    let err = provision_err(&app, &tenant).await;
    let kube: Vec<_> = err
        .failures
        .iter()
        .filter(|f| f.system == System::Kubernetes)
        .collect();
    // The Secret is refused; the Deployment, which waits for it, is never sent.
    assert_eq!(kube.len(), 1, "the secret refused: {err}");
    assert!(
        kube.iter().all(|f| f.kind == FailureKind::Forbidden),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("kubernetes: apply secret 'default/"),
        "{err}"
    );
    assert_no_secret(&err.to_string(), &tenant, &app).await;
}

#[tokio::test]
async fn rabbitmq_500_is_a_server_error_and_not_retried() {
    let url = answering(500).await;
    let app = app_with(&[("RABBITMQ_MANAGEMENT_URL", &url)]).await;
    let err = provision_err(&app, &fresh_tenant()).await;
    let f = err
        .failures
        .iter()
        .find(|f| f.system == System::Rabbitmq)
        .expect("a rabbitmq failure");
    assert_eq!(f.kind, FailureKind::ServerError);
    assert!(
        f.to_string().contains("500") && f.to_string().contains("node is down"),
        "{f}"
    );
    let user = err
        .report
        .steps
        .iter()
        .find(|s| s.step == "rabbitmq.user")
        .unwrap();
    assert_eq!(user.attempts, 1, "a 500 is not transient: {err}");
}

#[tokio::test]
async fn a_rabbitmq_that_stays_unavailable_is_retried_until_the_deadline() {
    let url = answering(503).await;
    let app = app_with(&[
        ("RABBITMQ_MANAGEMENT_URL", &url),
        ("PROVISION_BUDGET_MS", "1200"),
    ])
    .await;
    let started = std::time::Instant::now();
    let err = provision_err(&app, &fresh_tenant()).await;
    assert!(
        started.elapsed() < Duration::from_millis(1200 + 700),
        "{:?}",
        started.elapsed()
    );
    let f = err
        .failures
        .iter()
        .find(|f| f.system == System::Rabbitmq)
        .unwrap();
    assert_eq!(f.status, Some(503), "{f}");
    let user = err
        .report
        .steps
        .iter()
        .find(|s| s.step == "rabbitmq.user")
        .unwrap();
    assert!(user.attempts > 2, "503 is retried with backoff: {err}");
}

#[tokio::test]
async fn a_silent_rabbitmq_is_cut_off_at_the_deadline() {
    let url = silent().await;
    let app = app_with(&[
        ("RABBITMQ_MANAGEMENT_URL", &url),
        ("PROVISION_BUDGET_MS", "800"),
    ])
    .await;
    let tenant = fresh_tenant();
    let started = std::time::Instant::now();
    let err = provision_err(&app, &tenant).await.to_string();
    let took = started.elapsed();
    // The deadline is honoured however long the server stays silent (generous slack for CI).
    assert!(
        took < Duration::from_millis(800 + 700),
        "returned after {took:?}"
    );
    assert!(
        err.contains("did not finish within the 800 ms budget") && err.contains("rabbitmq.user"),
        "{err}"
    );
    // The other branches finished: the error says so, and a retry would converge.
    assert!(err.contains("kubernetes.deployment"), "{err}");
}

#[tokio::test]
async fn the_deadline_report_marks_unfinished_steps() {
    let url = silent().await;
    let app = app_with(&[
        ("RABBITMQ_MANAGEMENT_URL", &url),
        ("PROVISION_BUDGET_MS", "500"),
    ])
    .await;
    let err = provision_err(&app, &fresh_tenant()).await;
    let unfinished: Vec<_> = err
        .report
        .steps
        .iter()
        .filter(|s| s.outcome == Outcome::Unfinished)
        .map(|s| s.step)
        .collect();
    assert_eq!(unfinished, ["rabbitmq.vhost", "rabbitmq.user"], "{err}");
    assert!(
        err.report
            .steps
            .iter()
            .any(|s| s.step == "secrets-manager.tenant-secret" && s.outcome == Outcome::Ok)
    );
}

#[tokio::test]
async fn rabbitmq_connection_refused() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let app = app_with(&[
        ("RABBITMQ_MANAGEMENT_URL", &url),
        ("PROVISION_BUDGET_MS", "1000"),
    ])
    .await;
    let err = provision_err(&app, &fresh_tenant()).await;
    let f = err
        .failures
        .iter()
        .find(|f| f.system == System::Rabbitmq)
        .unwrap();
    assert_eq!(f.kind, FailureKind::Connect, "{f}");
    let user = err
        .report
        .steps
        .iter()
        .find(|s| s.step == "rabbitmq.user")
        .unwrap();
    assert!(user.attempts > 1, "a refused connection is retried: {err}");
}

#[tokio::test]
async fn kubernetes_connection_refused() {
    let ca = stack_ca_data();
    let endpoint = format!("https://127.0.0.1:{}", closed_port());
    let app = app_with(&[
        ("EKS_ENDPOINT", &endpoint),
        ("EKS_CA_DATA", &ca),
        ("PROVISION_BUDGET_MS", "1000"),
    ])
    .await;
    let err = provision_err(&app, &fresh_tenant()).await;
    let f = err
        .failures
        .iter()
        .find(|f| f.system == System::Kubernetes)
        .expect("kubernetes failure");
    assert_eq!(f.kind, FailureKind::Connect, "{f}");
}

#[tokio::test]
async fn a_silent_kubernetes_api_is_cut_off_at_the_deadline() {
    let ca = stack_ca_data();
    let endpoint = silent().await.replace("http://", "https://");
    let app = app_with(&[
        ("EKS_ENDPOINT", &endpoint),
        ("EKS_CA_DATA", &ca),
        ("PROVISION_BUDGET_MS", "700"),
    ])
    .await;
    let err = provision_err(&app, &fresh_tenant()).await;
    // The Secret's apply hangs; the Deployment, which waits for it, never started.
    assert_eq!(err.unfinished, ["kubernetes.secret"], "{err}");
}

#[tokio::test]
async fn a_malformed_admin_secret_fails_the_cold_start_without_quoting_it() {
    for (value, expected) in [
        ("hunter2 is not json".to_owned(), "is not valid JSON"),
        (
            json!({"username": "admin", "password": "hunter2"}).to_string(),
            "has no field 'tenant_password_key'",
        ),
        (
            json!({"username": "admin", "password": "hunter2", "tenant_password_key": "hunter2"})
                .to_string(),
            "at least 32 bytes",
        ),
    ] {
        let id = put_admin_secret(&value).await;
        let settings = settings_with(&[("RABBITMQ_ADMIN_SECRET_ID", &id)]);
        let aws = aws_config(&settings).await;
        let err = init_error(settings, &aws).await;
        assert!(
            err.contains("secrets-manager: read admin secret") && err.contains(expected),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[tokio::test]
async fn a_missing_admin_secret_or_cluster_is_named() {
    let settings = settings_with(&[("RABBITMQ_ADMIN_SECRET_ID", "post-signup/does-not-exist")]);
    let aws = aws_config(&settings).await;
    let err = init_error(settings, &aws).await;
    assert!(
        err.contains("secrets-manager") && err.contains("ResourceNotFoundException"),
        "{err}"
    );

    let settings = settings_with(&[("EKS_CLUSTER_NAME", "no-such-cluster")]);
    let aws = aws_config(&settings).await;
    let err = init_error(settings, &aws).await;
    assert!(
        err.contains("eks: describe cluster 'no-such-cluster'"),
        "{err}"
    );
}

#[tokio::test]
async fn secrets_manager_unreachable_fails_the_cold_start_clearly() {
    let settings = settings_with(&[]);
    let aws = aws_config_at(&settings, &format!("http://127.0.0.1:{}", closed_port())).await;
    let err = init_error(settings, &aws).await;
    assert!(err.contains("secrets-manager: read admin secret"), "{err}");
}

#[tokio::test]
async fn secrets_manager_failing_mid_provisioning_is_named() {
    // Cold start against the real stand-in, then Secrets Manager "goes away" (a 500 server).
    let settings = settings_with(&[("PROVISION_BUDGET_MS", "1000")]);
    let aws = aws_config(&settings).await;
    let mut app = post_signup::lambda::app::App::init_with(settings.clone(), &aws)
        .await
        .unwrap();
    let broken = aws_config_at(&settings, &answering(500).await).await;
    app.provisioner_mut().unwrap().secrets =
        post_signup::outside::secrets_manager::SecretsManager::new(
            aws_sdk_secretsmanager::Client::new(&broken),
        );
    let tenant = fresh_tenant();
    let err = provision_err(&app, &tenant).await;
    let f = err
        .failures
        .iter()
        .find(|f| f.system == System::SecretsManager)
        .expect("secrets manager failure");
    assert_eq!(f.kind, FailureKind::ServerError, "{f}");
    assert!(
        err.to_string()
            .contains("secrets-manager: store tenant secret"),
        "{err}"
    );
    assert_no_secret(&err.to_string(), &tenant, &app).await;
}
