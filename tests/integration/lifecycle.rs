//! A tenant's whole life against the real stack, as an operator runs it (`tenantctl` as the
//! operator identity): plan limits that the broker enforces, plan changes, suspension, password
//! rotation, readiness, listing and offboarding. The tests use `tests/data/plans.yaml`, whose
//! limits are small enough to hit.

use std::time::Duration;

use post_signup::tenant::TenantId;
use serde_json::Value;

use crate::helpers::*;

const PLANS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/plans.yaml");

/// `tenantctl ARGS` as the operator with the test plans; exit code and stdout as JSON.
fn operator(args: &[&str]) -> (i32, Value) {
    let out = tenantctl_with(args, &[("PLANS_PATH", PLANS)], true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{args:?}: no JSON on stdout; stderr: {stderr}"));
    (out.status.code().unwrap(), json)
}

fn ok(args: &[&str]) -> Value {
    let (code, json) = operator(args);
    assert_eq!(code, 0, "{args:?}: {json}");
    json
}

fn provisioned() -> TenantId {
    let tenant = fresh_tenant();
    ok(&["provision", "--sub", tenant.as_str()]);
    tenant
}

fn status(tenant: &TenantId) -> Value {
    ok(&["status", "--sub", tenant.as_str()])
}

/// Polls `what` until it holds or `secs` pass: rollouts and pod deletions take their time.
async fn eventually(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "not within {secs} s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn amqp_url(tenant: &TenantId) -> String {
    kube_secret_data(tenant).await.expect("the tenant's secret")["AMQP_URL"].clone()
}

async fn connect(url: &str) -> Result<lapin::Connection, String> {
    lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .map_err(|e| e.to_string())
}

async fn pods(tenant: &TenantId) -> usize {
    let ns = var("TENANT_NAMESPACE");
    let list = kube_admin_get(&format!(
        "/api/v1/namespaces/{ns}/pods?labelSelector=post-signup/tenant={tenant}"
    ))
    .await
    .unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .count()
}

async fn deployment(tenant: &TenantId) -> Value {
    let ns = var("TENANT_NAMESPACE");
    kube_admin_get(&format!(
        "/apis/apps/v1/namespaces/{ns}/deployments/{}",
        tenant.deployment_name()
    ))
    .await
    .expect("deployment")
}

#[tokio::test]
async fn the_plans_limits_are_set_at_sign_up_and_the_broker_enforces_them() {
    let app = app_with(&[("PLANS_PATH", PLANS)]).await;
    let tenant = fresh_tenant();
    let deadline = tokio::time::Instant::now() + app.budget();
    let report = app
        .provisioner()
        .await
        .unwrap()
        .provision(&tenant, deadline)
        .await
        .expect("provisioned");
    assert!(report.steps.iter().any(|s| s.step == "rabbitmq.limits"));
    let s = status(&tenant);
    assert_eq!(s["plan"], "tiny");
    assert_eq!(s["rabbitmq"]["vhost_limits"]["max-connections"], 2, "{s}");
    assert_eq!(s["rabbitmq"]["vhost_limits"]["max-queues"], 3, "{s}");
    assert_eq!(s["rabbitmq"]["user_limits"]["max-channels"], 5, "{s}");
    // The plan's default queue type: honoured by 4.0, ignored by 3.10 (which says so).
    let kept = s["rabbitmq"]["vhost"]["default_queue_type"]
        .as_str()
        .unwrap_or("");
    if var("STACK_RABBITMQ") == "4.0" {
        assert_eq!(kept, "quorum", "{s}");
    } else {
        assert_ne!(kept, "quorum", "{s}");
    }
    let url = amqp_url(&tenant).await;
    let first = connect(&url).await.expect("first connection");
    let second = connect(&url).await.expect("second connection");
    let third = connect(&url).await;
    assert!(
        third.is_err(),
        "a third connection is refused by max-connections"
    );
    let _ = (first.close(200, "").await, second.close(200, "").await);
}

#[tokio::test]
async fn a_plan_change_moves_limits_replicas_and_resources_and_sticks() {
    let tenant = provisioned();
    let change = ok(&["plan", "--sub", tenant.as_str(), "roomy"]);
    assert_eq!(
        (
            change["before"]["plan"].as_str(),
            change["after"]["plan"].as_str()
        ),
        (Some("tiny"), Some("roomy"))
    );
    let s = status(&tenant);
    assert_eq!(s["rabbitmq"]["vhost_limits"]["max-connections"], 5, "{s}");
    let d = deployment(&tenant).await;
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "128Mi"
    );
    let described = secrets_manager()
        .await
        .describe_secret()
        .secret_id(tenant.secrets_manager_name(&var("TENANT_SECRET_PREFIX")))
        .send()
        .await
        .unwrap();
    assert!(
        described
            .tags()
            .iter()
            .any(|t| t.key() == Some("post-signup/plan") && t.value() == Some("roomy")),
        "the plan is the secret's tag too"
    );
    // Provisioning again (as the worker or reconciler would) keeps the operator's plan.
    ok(&["provision", "--sub", tenant.as_str()]);
    assert_eq!(status(&tenant)["plan"], "roomy");
    let out = tenantctl_with(
        &["plan", "--sub", tenant.as_str(), "gigantic"],
        &[("PLANS_PATH", PLANS)],
        true,
    );
    assert_eq!(out.status.code(), Some(2), "an unknown plan is bad input");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no plan 'gigantic' (plans: bare, roomy, tiny)")
    );
}

#[tokio::test]
async fn suspend_closes_and_refuses_connections_and_scales_to_zero_resume_restores() {
    let tenant = provisioned();
    let url = amqp_url(&tenant).await;
    eventually(60, "the backend's pod runs", async || {
        pods(&tenant).await == 1
    })
    .await;
    let open = connect(&url).await.expect("connects while active");
    let change = ok(&["suspend", "--sub", tenant.as_str()]);
    assert_eq!(change["after"]["state"], "suspended");
    eventually(10, "the open connection is closed", async || {
        !open.status().connected()
    })
    .await;
    assert!(
        connect(&url).await.is_err(),
        "a suspended tenant cannot log in"
    );
    assert_eq!(deployment(&tenant).await["spec"]["replicas"], 0);
    eventually(60, "no pods while suspended", async || {
        pods(&tenant).await == 0
    })
    .await;
    let s = status(&tenant);
    assert_eq!(
        (s["state"].as_str(), s["ready"].as_bool()),
        (Some("suspended"), Some(false)),
        "{s}"
    );
    // The worker or reconciler provisioning it again keeps it suspended.
    ok(&["provision", "--sub", tenant.as_str()]);
    assert_eq!(deployment(&tenant).await["spec"]["replicas"], 0);

    ok(&["resume", "--sub", tenant.as_str()]);
    connect(&url)
        .await
        .expect("logs in again after resume")
        .close(200, "")
        .await
        .ok();
    assert_eq!(deployment(&tenant).await["spec"]["replicas"], 1);
    eventually(60, "the pod is back", async || pods(&tenant).await == 1).await;
}

#[tokio::test]
async fn rotate_changes_the_password_everywhere_and_rolls_the_backend() {
    let tenant = provisioned();
    let old_url = amqp_url(&tenant).await;
    let old_checksum = deployment(&tenant).await["spec"]["template"]["metadata"]["annotations"]
        ["post-signup/credentials-checksum"]
        .clone();
    let change = ok(&["rotate", "--sub", tenant.as_str()]);
    assert_eq!(change["after"]["generation"], 1);
    let new_url = amqp_url(&tenant).await;
    assert_ne!(old_url, new_url);
    assert!(
        connect(&old_url).await.is_err(),
        "the old password is refused"
    );
    amqp_login(&new_url).await.expect("the new password works");
    let sm = tenant_secret_json(&tenant).await.unwrap();
    assert_eq!(
        sm["amqp_url"].as_str().unwrap(),
        new_url,
        "Secrets Manager agrees"
    );
    let new_checksum = deployment(&tenant).await["spec"]["template"]["metadata"]["annotations"]
        ["post-signup/credentials-checksum"]
        .clone();
    assert_ne!(
        old_checksum, new_checksum,
        "the pod template changed: the backend rolls"
    );
    let versions = secrets_manager()
        .await
        .list_secret_version_ids()
        .secret_id(tenant.secrets_manager_name(&var("TENANT_SECRET_PREFIX")))
        .send()
        .await
        .unwrap();
    assert!(
        versions.versions().len() >= 2,
        "a new Secrets Manager version"
    );
    assert_eq!(status(&tenant)["password_generation"], 1);
}

#[tokio::test]
async fn status_and_list_tell_ready_suspended_and_incomplete_apart() {
    let ready = provisioned();
    let suspended = provisioned();
    let broken = provisioned();
    ok(&["suspend", "--sub", suspended.as_str()]);
    let ns = var("TENANT_NAMESPACE");
    let status_code = http()
        .delete(format!(
            "{}/apis/apps/v1/namespaces/{ns}/deployments/{}",
            var("STACK_KUBE_API"),
            broken.deployment_name()
        ))
        .bearer_auth(
            std::fs::read_to_string(var("STACK_ADMIN_TOKEN_FILE"))
                .unwrap()
                .trim(),
        )
        .send()
        .await
        .unwrap()
        .status();
    assert!(status_code.is_success());
    eventually(60, "the backend becomes available", async || {
        status(&ready)["ready"] == true
    })
    .await;
    let s = status(&ready);
    assert_eq!(s["state"], "complete");
    assert!(
        s["kubernetes"]["deployment"]["conditions"]
            .to_string()
            .contains("Available=True"),
        "{s}"
    );
    let broken_status = status(&broken);
    assert_eq!(broken_status["state"], "incomplete");
    assert_eq!(
        broken_status["missing"],
        serde_json::json!(["kubernetes deployment"])
    );
    assert_eq!(
        broken_status["drift"],
        serde_json::json!(["missing kubernetes deployment"]),
        "status names the drift from the record: {broken_status}"
    );
    assert_eq!(status(&suspended)["record"]["state"], "suspended");
    // `list` reads the registry alone, with filters.
    let list = |extra: &[&str]| -> Vec<Value> {
        let mut args = vec!["list", "--output", "json"];
        args.extend_from_slice(extra);
        let out = tenantctl_with(&args, &[("PLANS_PATH", PLANS)], true);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let listed = |rows: &[Value], t: &TenantId| rows.iter().any(|r| r["tenant"] == t.as_str());
    let rows = list(&[]);
    let row = |t: &TenantId| {
        rows.iter()
            .find(|r| r["tenant"] == t.as_str())
            .cloned()
            .expect("listed")
    };
    assert_eq!(row(&ready)["state"], "active");
    assert_eq!(row(&ready)["plan"], "tiny");
    assert_eq!(row(&suspended)["state"], "suspended");
    assert_eq!(
        row(&broken)["state"],
        "active",
        "the record, not the objects"
    );
    let only_suspended = list(&["--state", "suspended"]);
    assert!(listed(&only_suspended, &suspended));
    assert!(!listed(&only_suspended, &ready));
    assert!(only_suspended.iter().all(|r| r["state"] == "suspended"));
    let roomy = list(&["--plan", "roomy"]);
    assert!(!listed(&roomy, &ready));
    assert!(roomy.iter().all(|r| r["plan"] == "roomy"));
}

#[tokio::test]
async fn deprovision_leaves_nothing_behind_and_twice_is_fine() {
    let tenant = provisioned();
    let report = ok(&["deprovision", "--sub", tenant.as_str()]);
    assert_eq!(
        report["converged"]["removed"]["rabbitmq_vhost"], true,
        "{report}"
    );
    assert_eq!(report["after"]["state"], "offboarded", "{report}");
    assert_eq!(traces_of(&tenant).await, Vec::<&str>::new(), "nothing left");
    let again = ok(&["deprovision", "--sub", tenant.as_str()]);
    assert_eq!(again["changed"], false, "already offboarded: {again}");
    assert_eq!(
        again["converged"]["removed"]["rabbitmq_user"], false,
        "already gone is success: {again}"
    );
    // The function's own identity may not delete.
    let out = tenantctl_on_stack(&["deprovision", "--sub", provisioned().as_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
}

#[tokio::test]
async fn deprovision_with_retain_data_keeps_the_vhost_and_its_messages() {
    let tenant = provisioned();
    amqp_login(&amqp_url(&tenant).await).await.unwrap(); // declares a queue
    let report = ok(&["deprovision", "--sub", tenant.as_str(), "--retain-data"]);
    assert!(
        report["converged"]["removed"]["rabbitmq_vhost"].is_null(),
        "{report}"
    );
    assert_eq!(report["after"]["retain_data"], true, "{report}");
    assert_eq!(
        traces_of(&tenant).await,
        ["rabbitmq vhost"],
        "only the vhost stays"
    );
    let queues = rabbit_admin_get(&format!("queues/{tenant}")).await.unwrap();
    assert_eq!(queues.as_array().unwrap().len(), 1, "its queue too");
}

#[tokio::test]
async fn a_rotated_admin_credential_is_read_again_on_401() {
    // An administrator of our own, so the shared admin stays as it is.
    let admin = format!("test-admin-{}", uuid::Uuid::new_v4().simple());
    let put_admin = async |password: &str| {
        let resp = http()
            .put(format!(
                "{}/api/users/{admin}",
                var("RABBITMQ_MANAGEMENT_URL")
            ))
            .basic_auth(
                var("RABBITMQ_ADMIN_USERNAME"),
                Some(var("RABBITMQ_ADMIN_PASSWORD")),
            )
            .json(&serde_json::json!({"password": password, "tags": "administrator"}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    };
    put_admin("first-password-1").await;
    let secret = |password: &str| {
        serde_json::json!({"username": admin, "password": password, "tenant_password_key": "k".repeat(40)})
            .to_string()
    };
    let id = format!("post-signup/test-admin-{}", uuid::Uuid::new_v4());
    let sm = secrets_manager().await;
    sm.create_secret()
        .name(&id)
        .secret_string(secret("first-password-1"))
        .send()
        .await
        .unwrap();
    let app = app_with(&[("RABBITMQ_ADMIN_SECRET_ID", &id)]).await;
    // Rotated while the container is warm: RabbitMQ first, then the secret.
    put_admin("second-password-2").await;
    sm.put_secret_value()
        .secret_id(&id)
        .secret_string(secret("second-password-2"))
        .send()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + app.budget();
    app.provisioner()
        .await
        .unwrap()
        .provision(&fresh_tenant(), deadline)
        .await
        .expect("the 401 makes it read the admin secret again");
}
