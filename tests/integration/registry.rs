//! The tenant registry against the stack: the trigger records each tenant first (a duplicate or
//! a retry converges on one item), a registry that is down costs no sign-up, every operator
//! change is a guarded transition (concurrent changes are never silently lost), a half-done
//! rotation is finished by a re-run, and the whole life of a tenant reads back from the
//! registry's stream as lifecycle events, in order, once each.

use std::process::Output;
use std::time::Duration;

use post_signup::tenant::TenantId;
use post_signup::tenant::record::{LastOutcome, Phase};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::servers::{Fault, FaultProxy};

const PLANS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/plans.yaml");

/// `tenantctl ARGS` with the test plans and `extra`, as the operator or the function, off the
/// test's runtime (a fault proxy of the test may have to answer it meanwhile).
async fn run(args: &[&str], extra: &[(&str, &str)], operator: bool) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let mut env: Vec<(String, String)> = vec![("PLANS_PATH".into(), PLANS.into())];
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        tenantctl_with(&args, &env, operator)
    })
    .await
    .unwrap()
}

async fn ok(args: &[&str], extra: &[(&str, &str)]) -> Value {
    let out = run(args, extra, true).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{args:?}: no JSON; {stderr}"))
}

/// The trigger, exactly (`provision --event`), as the function.
async fn sign_up(tenant: &TenantId, extra: &[(&str, &str)]) -> Output {
    let path = std::env::temp_dir().join(format!("event-{tenant}-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&path, signup_event(tenant.as_str()).to_string()).unwrap();
    let out = run(
        &["provision", "--event", path.to_str().unwrap()],
        extra,
        false,
    )
    .await;
    let _ = std::fs::remove_file(&path);
    out
}

async fn deployment_checksum(tenant: &TenantId) -> Value {
    let ns = var("TENANT_NAMESPACE");
    kube_admin_get(&format!(
        "/apis/apps/v1/namespaces/{ns}/deployments/{}",
        tenant.deployment_name()
    ))
    .await
    .expect("deployment")["spec"]["template"]["metadata"]["annotations"]
        ["post-signup/credentials-checksum"]
        .clone()
}

#[tokio::test]
async fn a_sign_up_is_recorded_once_and_a_retry_converges_on_the_same_record() {
    let (table, stream) = fresh_registry_table().await;
    let tenant = fresh_tenant();
    for _ in 0..2 {
        let out = sign_up(&tenant, &[("REGISTRY_TABLE", &table)]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let record = registry_at(&table)
        .await
        .get(&tenant)
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(
        (
            record.state,
            record.origin.as_str(),
            record.version,
            record.generation
        ),
        (Phase::Active, "sign-up", 1, 0)
    );
    assert_eq!(record.outcome, LastOutcome::Provisioned);
    assert_eq!(
        record.user_pool_id.as_deref(),
        signup_event(tenant.as_str())["userPoolId"].as_str()
    );
    assert!(record.provisioned_at.is_some() && record.converged());
    assert_eq!(
        stream_events(&stream, &tenant).await,
        [("TenantOnboarded".to_owned(), 1)],
        "onboarded once, however often the trigger ran"
    );
}

#[tokio::test]
async fn a_registry_that_is_down_costs_no_sign_up_and_the_worker_records_the_tenant() {
    let tenant = fresh_tenant();
    let queue = fresh_queue().await;
    aws_fault(json!({"target": "DynamoDB_20120810.PutItem", "match": tenant.as_str(), "count": 1000, "status": 500, "error": "InternalServerError"})).await;
    let out = sign_up(
        &tenant,
        &[
            ("PROVISION_BUDGET_MS", "2000"),
            ("HANDOFF_QUEUE_URL", &queue),
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the person is not failed: {stderr}");
    assert!(stderr.contains("handed off"), "{stderr}");
    // Nothing that grants access was written without the record to say which password.
    let traces = traces_of(&tenant).await;
    assert!(
        !traces.contains(&"rabbitmq user") && !traces.contains(&"kubernetes secret"),
        "{traces:?}"
    );
    assert!(record_of(&tenant).await.is_none(), "the registry was down");
    // The fault lifts; the worker writes the record from the hand-off and finishes the tenant.
    aws_fault(json!({"clear": true, "match": tenant.as_str()})).await;
    let out = run(&["drain"], &[("HANDOFF_QUEUE_URL", &queue)], true).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(traces_of(&tenant).await.len(), 5, "complete");
    let record = record_of(&tenant).await;
    let record = record.expect("recorded by the worker");
    assert_eq!(
        (record.origin.as_str(), record.outcome),
        ("worker", LastOutcome::Provisioned)
    );
}

#[tokio::test]
async fn a_whole_life_reads_back_from_the_stream_in_order_once_each() {
    let (table, stream) = fresh_registry_table().await;
    let env = [("REGISTRY_TABLE", table.as_str())];
    let tenant = fresh_tenant();
    let out = sign_up(&tenant, &env).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sub = tenant.as_str();
    ok(&["plan", "--sub", sub, "roomy"], &env).await;
    ok(&["suspend", "--sub", sub], &env).await;
    ok(&["resume", "--sub", sub], &env).await;
    ok(&["rotate", "--sub", sub], &env).await;
    ok(&["deprovision", "--sub", sub], &env).await;
    let restored = ok(&["restore", "--sub", sub], &env).await;
    assert_eq!(restored["after"]["state"], "active");
    assert_eq!(
        restored["after"]["generation"], 2,
        "a restored tenant gets a new password"
    );
    assert_eq!(restored["after"]["plan"], "roomy", "and keeps its plan");
    assert_eq!(traces_of(&tenant).await.len(), 5, "provisioned again");
    let events = stream_events(&stream, &tenant).await;
    let expected: Vec<(String, u64)> = [
        "TenantOnboarded",
        "TenantPlanChanged",
        "TenantSuspended",
        "TenantResumed",
        "TenantRotated",
        "TenantOffboarded",
        "TenantRestored",
    ]
    .iter()
    .zip(1..)
    .map(|(e, seq)| ((*e).to_owned(), seq))
    .collect();
    assert_eq!(events, expected);
}

#[tokio::test]
async fn concurrent_suspend_and_plan_are_both_applied_or_one_is_refused_never_lost() {
    for _ in 0..3 {
        let tenant = fresh_tenant();
        ok(&["provision", "--sub", tenant.as_str()], &[]).await;
        let sub = tenant.as_str();
        let (suspend_args, plan_args) =
            (["suspend", "--sub", sub], ["plan", "--sub", sub, "roomy"]);
        let (suspend, plan) =
            tokio::join!(run(&suspend_args, &[], true), run(&plan_args, &[], true),);
        let mut applied = Vec::new();
        for (name, out) in [("suspend", &suspend), ("plan", &plan)] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            match out.status.code() {
                Some(0) => applied.push(name),
                Some(2) => assert!(stderr.contains("changed meanwhile"), "{name}: {stderr}"),
                code => panic!("{name}: exit {code:?}: {stderr}"),
            }
        }
        assert!(!applied.is_empty(), "one of them always goes through");
        let record = record_of(&tenant).await.unwrap();
        assert_eq!(
            record.state == Phase::Suspended,
            applied.contains(&"suspend"),
            "{applied:?} {record:?}"
        );
        assert_eq!(
            record.plan == "roomy",
            applied.contains(&"plan"),
            "{applied:?} {record:?}"
        );
        assert_eq!(record.version, 1 + applied.len() as u64);
        let status = ok(&["status", "--sub", sub], &[]).await;
        assert_eq!(
            status["drift"],
            json!([]),
            "reality is the record: {status}"
        );
    }
}

#[tokio::test]
async fn a_rotation_whose_secret_apply_failed_is_finished_by_a_rerun() {
    let tenant = fresh_tenant();
    ok(&["provision", "--sub", tenant.as_str()], &[]).await;
    let before = deployment_checksum(&tenant).await;
    // The API server answers the Secret's apply (the first request) with a 500: not transient.
    let proxy = FaultProxy::kube_apiserver(vec![Fault::kubernetes(500, None)]).await;
    let ca = stack_ca_data();
    let through = [
        ("EKS_ENDPOINT", proxy.url.as_str()),
        ("EKS_CA_DATA", ca.as_str()),
    ];
    let out = run(&["rotate", "--sub", tenant.as_str()], &through, true).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(proxy.faulted(), 1);
    let record = record_of(&tenant).await.unwrap();
    assert_eq!(
        (record.generation, record.pending.as_deref()),
        (1, Some("rotate"))
    );
    assert_eq!(
        deployment_checksum(&tenant).await,
        before,
        "the Deployment was not rolled onto a Secret that was not written"
    );
    // The re-run finishes the same rotation: no new generation, the Secret, then the roll.
    let done = ok(&["rotate", "--sub", tenant.as_str()], &[]).await;
    assert_eq!(
        (
            done["changed"].as_bool(),
            done["after"]["generation"].as_u64()
        ),
        (Some(false), Some(1))
    );
    assert_ne!(
        deployment_checksum(&tenant).await,
        before,
        "the backend rolls"
    );
    let data = kube_secret_data(&tenant).await.unwrap();
    amqp_login(&data["AMQP_URL"])
        .await
        .expect("the Secret holds the new password");
    let record = record_of(&tenant).await.unwrap();
    assert!(record.converged() && record.pending.is_none(), "{record:?}");
}

#[tokio::test]
async fn rotate_closes_connections_that_still_use_the_old_password_once_the_backend_rolled() {
    let tenant = fresh_tenant();
    ok(&["provision", "--sub", tenant.as_str()], &[]).await;
    let old = kube_secret_data(&tenant).await.unwrap()["AMQP_URL"].clone();
    let open = lapin::Connection::connect(&old, lapin::ConnectionProperties::default())
        .await
        .expect("connects with the first password");
    let listed = rabbit_admin_get(&format!("connections/username/{tenant}")).await;
    let done = ok(&["rotate", "--sub", tenant.as_str(), "--wait", "90"], &[]).await;
    assert!(
        done["converged"]["closed_connections"].as_u64() >= Some(1),
        "{done} {listed:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while open.status().connected() {
        assert!(
            std::time::Instant::now() < deadline,
            "the old connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn adopt_records_existing_tenants_from_their_objects_once() {
    // A tenant made by the library alone (as before the registry existed), then suspended by
    // its labels' older mechanism: its objects say so.
    let app = app().await;
    let tenant = fresh_tenant();
    let p = app.provisioner().await.unwrap();
    let state = post_signup::tenant::plan::TenantState {
        plan: p.plans.default_plan().name.clone(),
        suspended: true,
        generation: 3,
    };
    let deadline = tokio::time::Instant::now() + app.budget();
    p.provision_with(&tenant, post_signup::cells::DEFAULT_CELL, &state, deadline)
        .await
        .unwrap();
    let status = ok(&["status", "--sub", tenant.as_str()], &[]).await;
    assert_eq!(status["state"], "unrecorded", "{status}");
    // Into a registry of its own: adopt takes every unrecorded tenant of the namespace.
    let (table, _) = fresh_registry_table().await;
    let env = [("REGISTRY_TABLE", table.as_str())];
    let adopt = async || -> Value {
        // Other tests' tenants may be mid-fault; a failure of theirs is reported, not ours.
        let out = run(&["adopt"], &env, true).await;
        serde_json::from_slice(&out.stdout).expect("a JSON report")
    };
    let adopted = adopt().await;
    assert!(
        adopted["adopted"]
            .as_array()
            .unwrap()
            .contains(&json!(tenant.as_str())),
        "{adopted}"
    );
    let record = registry_at(&table)
        .await
        .get(&tenant)
        .await
        .unwrap()
        .expect("adopted");
    assert_eq!(
        (record.state, record.generation, record.origin.as_str()),
        (Phase::Suspended, 3, "adopted")
    );
    let again = adopt().await;
    assert!(
        !again["adopted"]
            .as_array()
            .unwrap()
            .contains(&json!(tenant.as_str())),
        "once: {again}"
    );
}

#[tokio::test]
async fn limits_the_plan_does_not_have_are_removed_and_drift_is_repaired() {
    let tenant = fresh_tenant();
    ok(&["provision", "--sub", tenant.as_str()], &[]).await;
    let sub = tenant.as_str();
    // `bare` sets no user limits: moving there removes tiny's.
    ok(&["plan", "--sub", sub, "bare"], &[]).await;
    let status = ok(&["status", "--sub", sub], &[]).await;
    assert_eq!(status["rabbitmq"]["user_limits"], json!({}), "{status}");
    assert_eq!(status["drift"], json!([]), "{status}");
    // Someone changes a limit on the broker by hand: drift, named, and repaired.
    let resp = http()
        .put(format!(
            "{}/api/vhost-limits/{tenant}/max-queues",
            var("RABBITMQ_MANAGEMENT_URL")
        ))
        .basic_auth(
            var("RABBITMQ_ADMIN_USERNAME"),
            Some(var("RABBITMQ_ADMIN_PASSWORD")),
        )
        .json(&json!({"value": 999}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let status = ok(&["status", "--sub", sub], &[]).await;
    assert!(
        status["drift"].to_string().contains("vhost limits"),
        "{status}"
    );
    ok(&["provision", "--sub", sub], &[]).await;
    let status = ok(&["status", "--sub", sub], &[]).await;
    assert_eq!(status["drift"], json!([]), "{status}");
    assert_eq!(
        status["rabbitmq"]["vhost_limits"]["max-queues"], 4,
        "{status}"
    );
}

#[tokio::test]
async fn of_concurrent_transitions_from_one_version_exactly_one_is_written() {
    use post_signup::outside::error::FailureKind;
    use post_signup::tenant::record::TenantRecord;
    use post_signup::tenant::transition::{Change, transition};
    let (table, _) = fresh_registry_table().await;
    let registry = registry_at(&table).await;
    let tenant = fresh_tenant();
    let plans = post_signup::tenant::plan::Plans::embedded().unwrap();
    let record = TenantRecord::new(&tenant, None, &plans, "test");
    registry.create(&record).await.unwrap();
    // Ten operators read version 1 and each rotate: one wins, nine are told to read again.
    let attempts = (0..10).map(|_| {
        let (registry, record) = (registry.clone(), record.clone());
        async move {
            let after = transition(&record, &Change::Rotate, "t").unwrap().unwrap();
            registry.transition(&record, &after).await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.kind == FailureKind::Conflict && e.detail.contains("changed meanwhile")),
        "{results:?}"
    );
    let now = registry.get(&tenant).await.unwrap().unwrap();
    assert_eq!((now.version, now.generation), (2, 1));
}

#[tokio::test]
async fn a_replayed_sign_up_of_an_offboarded_tenant_grants_nothing_even_with_the_registry_down() {
    let tenant = fresh_tenant();
    ok(&["provision", "--sub", tenant.as_str()], &[]).await;
    ok(&["deprovision", "--sub", tenant.as_str()], &[]).await;
    let queue = fresh_queue().await;
    aws_fault(json!({"target": "DynamoDB_20120810.PutItem", "match": tenant.as_str(), "count": 1000, "status": 500, "error": "InternalServerError"})).await;
    let out = sign_up(
        &tenant,
        &[
            ("PROVISION_BUDGET_MS", "2000"),
            ("HANDOFF_QUEUE_URL", &queue),
        ],
    )
    .await;
    aws_fault(json!({"clear": true, "match": tenant.as_str()})).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let traces = traces_of(&tenant).await;
    for part in [
        "rabbitmq user",
        "kubernetes secret",
        "kubernetes deployment",
        "secrets manager entry",
    ] {
        assert!(!traces.contains(&part), "{part} came back: {traces:?}");
    }
    // The worker reads the tombstone and provisions nothing.
    let out = run(&["drain"], &[("HANDOFF_QUEUE_URL", &queue)], true).await;
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["skipped"], 1, "{summary}");
    assert_eq!(record_of(&tenant).await.unwrap().state, Phase::Offboarded);
    assert!(!traces_of(&tenant).await.contains(&"rabbitmq user"));
}
