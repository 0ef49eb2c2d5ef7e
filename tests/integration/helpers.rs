//! Shared helpers for the integration tests: the local stack's settings, a fresh tenant per
//! test, and direct (admin) access to each real service for checking what the function did.

use std::collections::HashMap;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use post_signup::lambda::app::App;
use post_signup::lambda::settings::Settings;
use post_signup::tenant::TenantId;
use serde_json::Value;

/// The stack's `.stack/env`, parsed. Panics with how to start the stack if it is not up:
/// these tests never skip.
pub fn stack_env() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        post_signup::install_crypto_provider();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/.stack/env");
        let text = std::fs::read_to_string(path).unwrap_or_else(|_| {
            panic!("the local stack is not up ({path} is missing): run `make stack-up` (or `make test`, which starts it)")
        });
        let mut env: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        // The stack runs RabbitMQ 3.10 and 4.0; POST_SIGNUP_TEST_BROKER picks the one the
        // tests (and every tenantctl they start) use. `make test` runs the suite on both.
        if let Ok(broker) = std::env::var("POST_SIGNUP_TEST_BROKER") {
            let key = broker.replace('.', "_");
            for var in ["MANAGEMENT_URL", "AMQP_URL"] {
                let url = env
                    .get(&format!("RABBITMQ_{key}_{var}"))
                    .unwrap_or_else(|| panic!("POST_SIGNUP_TEST_BROKER={broker}: the stack has no such broker (3.10, 4.0)"))
                    .clone();
                env.insert(format!("RABBITMQ_{var}"), url);
            }
            env.insert("STACK_RABBITMQ".to_owned(), broker);
        }
        let api = &env["STACK_KUBE_API"];
        let probe = std::net::TcpStream::connect_timeout(
            &api.trim_start_matches("https://").parse().expect("STACK_KUBE_API is host:port"),
            Duration::from_secs(1),
        );
        assert!(probe.is_ok(), "the local stack is not answering at {api}: run `make stack-up`");
        env
    })
}

pub fn var(name: &str) -> String {
    stack_env()
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} missing from .stack/env"))
}

/// Settings from the stack's env, with `overrides` (a value of "" removes the variable).
pub fn settings_with(overrides: &[(&str, &str)]) -> Settings {
    let env = stack_env();
    let over: HashMap<&str, &str> = overrides.iter().copied().collect();
    Settings::from_lookup(|k| match over.get(k) {
        Some(&"") => None,
        Some(v) => Some((*v).to_owned()),
        None => env.get(k).cloned(),
    })
    .expect("stack settings are valid")
}

/// The AWS config a Lambda would have on the stack (credentials, region, endpoint).
pub async fn aws_config(settings: &Settings) -> aws_config::SdkConfig {
    aws_config_at(settings, &var("AWS_ENDPOINT_URL")).await
}

pub async fn aws_config_at(settings: &Settings, endpoint: &str) -> aws_config::SdkConfig {
    aws_config_as(settings, endpoint, stack_env()).await
}

/// The stack's AWS config with the credentials of `identity` (`.stack/env`, or the operator's).
async fn aws_config_as(
    settings: &Settings,
    endpoint: &str,
    identity: &HashMap<String, String>,
) -> aws_config::SdkConfig {
    let creds = aws_credential_types::Credentials::new(
        &identity["AWS_ACCESS_KEY_ID"],
        &identity["AWS_SECRET_ACCESS_KEY"],
        Some(identity["AWS_SESSION_TOKEN"].clone()),
        None,
        "stack",
    );
    // The function's own timeouts and retry policy; only where and as whom differ.
    post_signup::outside::aws::config_loader(settings.connect_timeout, settings.budget)
        .region(aws_config::Region::new(stack_env()["AWS_REGION"].clone()))
        .credentials_provider(creds)
        .endpoint_url(endpoint)
        .load()
        .await
}

pub async fn app_with(overrides: &[(&str, &str)]) -> App {
    let settings = settings_with(overrides);
    let aws = aws_config(&settings).await;
    App::init_with(settings, &aws)
        .await
        .expect("cold start on the stack")
}

/// As [`app_with`], as the scheduled reconciler's identity (`.stack/reconciler.env`).
pub async fn reconciler_app_with(overrides: &[(&str, &str)]) -> App {
    let settings = settings_with(overrides);
    let aws = aws_config_as(
        &settings,
        &var("AWS_ENDPOINT_URL"),
        &identity_env("reconciler"),
    )
    .await;
    App::init_with(settings, &aws)
        .await
        .expect("cold start on the stack")
}

pub async fn app() -> App {
    app_with(&[]).await
}

/// A fresh tenant id for this test, so tests never share state.
pub fn fresh_tenant() -> TenantId {
    TenantId::parse(&uuid::Uuid::new_v4().to_string()).unwrap()
}

pub use post_signup::lambda::event::sign_up_event as signup_event;

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(var("STACK_CA_FILE")).unwrap()).unwrap(),
        )
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// GET a Kubernetes API path as the stack admin; `None` on 404.
pub async fn kube_admin_get(path: &str) -> Option<Value> {
    let resp = kube_admin(reqwest::Method::GET, path).await;
    if resp.status() == 404 {
        return None;
    }
    assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
    Some(resp.json().await.unwrap())
}

/// A request to the Kubernetes API as the cluster admin.
async fn kube_admin(method: reqwest::Method, path: &str) -> reqwest::Response {
    let token = std::fs::read_to_string(var("STACK_ADMIN_TOKEN_FILE")).unwrap();
    http()
        .request(method, format!("{}{path}", var("STACK_KUBE_API")))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
}

/// DELETE a Kubernetes API path as the cluster admin (a person's hand, in tests).
pub async fn kube_admin_delete(path: &str) {
    let resp = kube_admin(reqwest::Method::DELETE, path).await;
    assert!(
        resp.status().is_success(),
        "DELETE {path}: {}",
        resp.status()
    );
}

/// GET a RabbitMQ management API path as the admin; `None` on 404.
pub async fn rabbit_admin_get(path: &str) -> Option<Value> {
    let resp = http()
        .get(format!("{}/api/{path}", var("RABBITMQ_MANAGEMENT_URL")))
        .basic_auth(
            var("RABBITMQ_ADMIN_USERNAME"),
            Some(var("RABBITMQ_ADMIN_PASSWORD")),
        )
        .send()
        .await
        .unwrap();
    if resp.status() == 404 {
        return None;
    }
    assert!(
        resp.status().is_success(),
        "GET /api/{path}: {}",
        resp.status()
    );
    Some(resp.json().await.unwrap())
}

pub async fn secrets_manager() -> aws_sdk_secretsmanager::Client {
    let settings = settings_with(&[]);
    aws_sdk_secretsmanager::Client::new(&aws_config(&settings).await)
}

/// The Secrets Manager entry of a tenant, parsed; `None` when it does not exist.
pub async fn tenant_secret_json(tenant: &TenantId) -> Option<Value> {
    let name = tenant.secrets_manager_name(&var("TENANT_SECRET_PREFIX"));
    match secrets_manager()
        .await
        .get_secret_value()
        .secret_id(name)
        .send()
        .await
    {
        Ok(out) => Some(serde_json::from_str(out.secret_string().unwrap()).unwrap()),
        Err(e) => {
            let code =
                aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(&e).map(str::to_owned);
            let message = aws_sdk_secretsmanager::error::ProvideErrorMetadata::message(&e)
                .unwrap_or_default()
                .to_owned();
            // Gone, or scheduled for deletion (deprovisioned with a recovery window).
            let deleted =
                code.as_deref() == Some("InvalidRequestException") && message.contains("deleted");
            assert!(
                code.as_deref() == Some("ResourceNotFoundException") || deleted,
                "{e:?}"
            );
            None
        }
    }
}

/// The tenant's Kubernetes Secret data, decoded.
pub async fn kube_secret_data(tenant: &TenantId) -> Option<HashMap<String, String>> {
    use base64::Engine as _;
    let ns = var("TENANT_NAMESPACE");
    let secret = kube_admin_get(&format!(
        "/api/v1/namespaces/{ns}/secrets/{}",
        tenant.secret_name()
    ))
    .await?;
    Some(
        secret["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap())
                    .unwrap();
                (k.clone(), String::from_utf8(bytes).unwrap())
            })
            .collect(),
    )
}

/// Everything that exists for a tenant, as booleans, for "nothing was created" checks.
pub async fn traces_of(tenant: &TenantId) -> Vec<&'static str> {
    let ns = var("TENANT_NAMESPACE");
    let mut found = Vec::new();
    if rabbit_admin_get(&format!("users/{tenant}")).await.is_some() {
        found.push("rabbitmq user");
    }
    if rabbit_admin_get(&format!("vhosts/{tenant}"))
        .await
        .is_some()
    {
        found.push("rabbitmq vhost");
    }
    if kube_admin_get(&format!(
        "/api/v1/namespaces/{ns}/secrets/{}",
        tenant.secret_name()
    ))
    .await
    .is_some()
    {
        found.push("kubernetes secret");
    }
    if kube_admin_get(&format!(
        "/apis/apps/v1/namespaces/{ns}/deployments/{}",
        tenant.deployment_name()
    ))
    .await
    .is_some()
    {
        found.push("kubernetes deployment");
    }
    if tenant_secret_json(tenant).await.is_some() {
        found.push("secrets manager entry");
    }
    found
}

/// Opens an AMQP connection and a channel; the error text on failure.
pub async fn amqp_login(url: &str) -> Result<(), String> {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .map_err(|e| e.to_string())?;
    let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
    channel
        .queue_declare("post-signup-test", Default::default(), Default::default())
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.close(200, "bye").await;
    Ok(())
}

pub const TENANTCTL: &str = env!("CARGO_BIN_EXE_tenantctl");

/// tenantctl with a clean environment: only what is given, plus PATH.
pub fn tenantctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(TENANTCTL);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("tenantctl runs")
}

/// tenantctl with the stack's environment (the function's identity).
pub fn tenantctl_on_stack(args: &[&str]) -> Output {
    tenantctl_with(args, &[], false)
}

/// tenantctl with the stack's environment, as the operator when `operator`, plus `overrides`.
pub fn tenantctl_with(args: &[&str], overrides: &[(&str, &str)], operator: bool) -> Output {
    let mut env: HashMap<String, String> = stack_env().clone();
    if operator {
        env.extend(operator_env());
    }
    for (k, v) in overrides {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    tenantctl(args, &env)
}

/// `tenantctl ARGS` as the operator, on the stack; asserts it succeeded.
pub fn operator_ok(args: &[&str]) {
    let out = tenantctl_with(args, &[], true);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `.stack/operator.env`: the operator identity's variables.
pub fn operator_env() -> HashMap<String, String> {
    identity_env("operator")
}

/// `.stack/<who>.env`: an identity's credentials (operator, reconciler).
fn identity_env(who: &str) -> HashMap<String, String> {
    let path = format!("{}/.stack/{who}.env", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{path} is missing: run `make stack-up`"))
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Adds a fault rule to the AWS stand-in (see dev/aws_standin.py).
pub async fn aws_fault(rule: Value) {
    let resp = http()
        .post(format!("{}/_standin/faults", var("STACK_AWS_STANDIN")))
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "fault rule refused: {}",
        resp.status()
    );
}

pub async fn sqs() -> aws_sdk_sqs::Client {
    let settings = settings_with(&[]);
    aws_sdk_sqs::Client::new(&aws_config(&settings).await)
}

/// A hand-off queue of this test's own, so tests never see each other's messages.
pub async fn fresh_queue() -> String {
    sqs()
        .await
        .create_queue()
        .queue_name(format!("test-{}", uuid::Uuid::new_v4()))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

/// The bodies of every message visible on `queue` (left on the queue, visible again at once).
pub async fn queue_bodies(queue: &str) -> Vec<Value> {
    let client = sqs().await;
    let out = client
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    out.messages
        .unwrap_or_default()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect()
}

/// What Lambda's SQS event source does for the worker, for `tenant`'s hand-off on `queue`:
/// receives it (long polling, at most 20 s; other tenants' messages are made visible again at
/// once, for their own tests), invokes the worker with it as an `SqsEvent`, and deletes it unless
/// the worker reported it failed. Panics if no hand-off of `tenant` arrives.
pub async fn worker_takes_handoff_of(tenant: &TenantId, queue: &str) -> bool {
    let app = app_with(&[("HANDOFF_QUEUE_URL", queue)]).await;
    worker_of(&app, tenant, queue).await
}

/// As [`worker_takes_handoff_of`], with `app` as the worker (its cells, registry and queue).
pub async fn worker_of(app: &App, tenant: &TenantId, queue: &str) -> bool {
    worker_of_message(app, tenant.as_str(), queue).await
}

/// As [`worker_of`], for the first message on `queue` whose body contains `needle`.
pub async fn worker_of_message(app: &App, needle: &str, queue: &str) -> bool {
    use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
    let client = sqs().await;
    let waited = std::time::Instant::now();
    let found = loop {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(20),
            "no message with {needle} on {queue}"
        );
        let out = client
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(2)
            .send()
            .await
            .unwrap();
        let mut mine = None;
        for m in out.messages.unwrap_or_default() {
            if mine.is_none() && m.body().is_some_and(|b| b.contains(needle)) {
                mine = Some(m);
            } else if let Some(handle) = m.receipt_handle() {
                client
                    .change_message_visibility()
                    .queue_url(queue)
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .send()
                    .await
                    .unwrap();
            }
        }
        if let Some(m) = mine {
            break m;
        }
    };
    let mut message = SqsMessage::default();
    message.message_id = found.message_id.clone();
    message.body = found.body.clone();
    let mut event = SqsEvent::default();
    event.records = vec![message];
    let response = post_signup::lambda::worker::handle(
        app,
        lambda_runtime::LambdaEvent::new(event, lambda_runtime::Context::default()),
    )
    .await
    .unwrap();
    let failed = !response.batch_item_failures.is_empty();
    if !failed {
        client
            .delete_message()
            .queue_url(queue)
            .receipt_handle(found.receipt_handle().unwrap())
            .send()
            .await
            .unwrap();
    }
    !failed
}

/// One provisioning of `tenant` by the app's provisioner, within the app's budget.
pub async fn provision_once(
    app: &App,
    tenant: &TenantId,
) -> Result<post_signup::ops::provision::Report, post_signup::ops::provision::ProvisionError> {
    let deadline = tokio::time::Instant::now() + app.budget();
    app.provisioner()
        .await
        .expect("cold start on the stack")
        .provision(tenant, deadline)
        .await
}

/// The stack CA, base64 as EKS reports `certificateAuthority.data`.
pub fn stack_ca_data() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(var("STACK_CA_FILE")).unwrap())
}

pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&aws_config(&settings_with(&[])).await)
}

/// The registry of the stack (or of `table`), as the library reads it.
pub async fn registry_at(table: &str) -> post_signup::outside::registry::Registry {
    post_signup::outside::registry::Registry::new(dynamodb().await, table)
}

/// The tenant's record in the stack's registry, if it has one.
pub async fn record_of(tenant: &TenantId) -> Option<post_signup::tenant::record::TenantRecord> {
    registry_at(&var("REGISTRY_TABLE"))
        .await
        .get(tenant)
        .await
        .expect("the registry answers")
}

/// A registry table of this test's own (key `sub`, with its stream), as the stack seeds one;
/// returns its name and its stream's ARN.
pub async fn fresh_registry_table() -> (String, String) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        StreamSpecification, StreamViewType,
    };
    let name = format!("test-{}", uuid::Uuid::new_v4().simple());
    let out = dynamodb()
        .await
        .create_table()
        .table_name(&name)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("sub")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("sub")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let stream = out.table_description.unwrap().latest_stream_arn.unwrap();
    (name, stream)
}

/// The lifecycle events of `tenant` as a consumer of the event bus receives them: the stack runs
/// the template's own Pipe (dev/pipe_standin.py, read from template.yml) over the registry
/// stream `stream_arn` — its filter, its input template, its target — into a bus whose rule
/// delivers to a queue, and this reads that queue. Every detail must parse as a JSON object
/// with the fields a consumer needs; a record the Pipe's target refused fails the test.
/// Returns `(event, event_seq)` in the order delivered.
pub async fn stream_events(stream_arn: &str, tenant: &TenantId) -> Vec<(String, u64)> {
    let ran: Value = http()
        .post(format!("{}/_standin/pipes", var("STACK_AWS_STANDIN")))
        .json(&serde_json::json!({"source": stream_arn}))
        .send()
        .await
        .expect("the stand-in runs the Pipe")
        .json()
        .await
        .unwrap();
    assert_eq!(
        (ran["failed"].as_u64(), ran["dead_lettered"].as_u64()),
        (Some(0), Some(0)),
        "the Pipe's target refused records (the stand-in's log says why): {ran}"
    );
    let queue = ran["queue_url"]
        .as_str()
        .expect("the bus's queue")
        .to_owned();
    let client = sqs().await;
    let mut out = Vec::new();
    loop {
        let page = client
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let messages = page.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            client
                .delete_message()
                .queue_url(&queue)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
            let envelope: Value = serde_json::from_str(m.body().unwrap()).unwrap();
            let detail = &envelope["detail"];
            assert!(
                detail.is_object(),
                "the detail is a JSON object: {envelope}"
            );
            if detail["tenant"] != tenant.as_str() {
                continue;
            }
            for field in [
                "eventId", "event", "tenant", "state", "plan", "cell", "version", "time",
            ] {
                assert!(
                    !detail[field].is_null(),
                    "the detail carries {field}: {detail}"
                );
            }
            assert_eq!(envelope["detail-type"], detail["event"], "{envelope}");
            assert_eq!(envelope["source"], "post-signup", "{envelope}");
            assert!(detail["version"].is_u64(), "version is a number: {detail}");
            let (sub, seq) = detail["eventId"]
                .as_str()
                .and_then(|id| id.rsplit_once(':'))
                .expect("eventId is <tenant>:<seq>");
            assert_eq!(sub, tenant.as_str());
            out.push((
                detail["event"].as_str().unwrap().to_owned(),
                seq.parse().expect("a number"),
            ));
        }
    }
    out
}

/// The broker under test (POST_SIGNUP_TEST_BROKER) and the other one of the stack.
pub fn stack_brokers() -> (String, String) {
    let under_test = var("STACK_RABBITMQ");
    let other = if under_test == "4.0" { "3.10" } else { "4.0" };
    (under_test, other.to_owned())
}

/// A cells file of the test's own naming the stack's two brokers as cells `a` (the broker
/// under test, where tenants recorded before cells live) and `b` (the other one), with these
/// vhost capacities and `connections` each; returns its path.
pub fn cells_file_with(a_vhosts: u32, b_vhosts: u32, connections: u64) -> String {
    cells_file_pooled(a_vhosts, b_vhosts, connections, None)
}

/// As `cells_file_with`, cell `a` keeping `pool_a` quorum vhosts made ahead (the default
/// plan's queue type), if given.
pub fn cells_file_pooled(
    a_vhosts: u32,
    b_vhosts: u32,
    connections: u64,
    pool_a: Option<u32>,
) -> String {
    let path = std::env::temp_dir().join(format!("cells-{}.yaml", uuid::Uuid::new_v4()));
    let cell = |name: &str, broker: &str, vhosts: u32, pool: Option<u32>| {
        let broker = broker.replace('.', "_");
        let pool = pool.map_or(String::new(), |size| {
            format!("    pool: {{size: {size}, queue_types: [quorum]}}\n")
        });
        format!(
            "  - name: {name}\n    management_url: {}\n    amqp_url: {}\n    admin_secret_id: {}\n    capacity: {{vhosts: {vhosts}, connections: {connections}}}\n{pool}",
            var(&format!("RABBITMQ_{broker}_MANAGEMENT_URL")),
            var(&format!("RABBITMQ_{broker}_AMQP_URL")),
            var("RABBITMQ_ADMIN_SECRET_ID"),
        )
    };
    let (a, b) = stack_brokers();
    let text = format!(
        "cells:\n{}{}",
        cell("a", &a, a_vhosts, pool_a),
        cell("b", &b, b_vhosts, None)
    );
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The trigger's answer to `tenant`'s sign-up on `app`.
pub async fn sign_up_on(
    app: &post_signup::lambda::app::App,
    tenant: &TenantId,
) -> post_signup::lambda::trigger::Finish {
    let event = signup_event(tenant.as_str());
    post_signup::lambda::trigger::handle_reporting(
        app,
        lambda_runtime::LambdaEvent::new(event, lambda_runtime::Context::default()),
    )
    .await
    .expect("the trigger answers")
    .1
}

/// Whether cell `cell`'s broker (of `app`'s cells) has `tenant`'s vhost.
pub async fn vhost_in_cell(app: &App, cell: &str, tenant: &TenantId) -> bool {
    vhost_named_in_cell(app, cell, tenant.rabbitmq_vhost()).await
}

/// Whether cell `cell`'s broker (of `app`'s cells) has a vhost named `vhost`.
pub async fn vhost_named_in_cell(app: &App, cell: &str, vhost: &str) -> bool {
    app.provisioner()
        .await
        .unwrap()
        .brokers
        .get(cell)
        .await
        .unwrap()
        .rabbitmq
        .vhost(vhost)
        .await
        .unwrap()
        .is_some()
}
