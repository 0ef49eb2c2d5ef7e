//! One writer per tenant, against the stack: a repair (the worker's, a reconcile run's) that
//! read a tenant before an operator changed it applies nothing of its old copy; an operator
//! who finds the tenant held is told who holds it, and the change stays recorded; a lease that
//! ran out is taken over and its old holder's last write refused. Each race is made
//! deterministic by doing its two halves in order: the copy is read first, the operator's
//! change runs to its end, then the late repair runs with the old copy.

use std::time::{Duration, SystemTime};

use post_signup::ops::change::change;
use post_signup::ops::converge::{ConvergeOptions, converge};
use post_signup::outside::error::FailureKind;
use post_signup::outside::registry::Taken;
use post_signup::tenant::TenantId;
use post_signup::tenant::record::Phase;
use post_signup::tenant::record::now;
use post_signup::tenant::transition::{Change, transition};

use crate::helpers::*;

/// A tenant provisioned by the operator, its backend's AMQP URL (with its password).
async fn provisioned() -> (TenantId, String) {
    let tenant = fresh_tenant();
    operator_ok(&["provision", "--sub", tenant.as_str()]);
    let url = kube_secret_data(&tenant).await.expect("its Secret")["AMQP_URL"].clone();
    amqp_login(&url).await.expect("its password logs in");
    (tenant, url)
}

#[tokio::test]
async fn a_repair_read_before_a_deprovision_brings_nothing_back() {
    let app = app().await;
    let p = app.provisioner().await.unwrap();
    let (tenant, url) = provisioned().await;
    // What the worker or a reconcile run read, before the operator offboards the tenant.
    let stale = record_of(&tenant).await.unwrap();
    operator_ok(&["deprovision", "--sub", tenant.as_str()]);
    assert_eq!(traces_of(&tenant).await, Vec::<&str>::new(), "offboarded");

    // The late repair, with its old copy (active), as the worker and the reconciler run it.
    let done = converge(p, &stale, ConvergeOptions::no_removal(app.budget()))
        .await
        .expect("nothing to do is no error");
    assert!(done.report.is_none(), "nothing was provisioned: {done:?}");
    assert_eq!(done.state, Phase::Offboarded);
    assert_eq!(
        traces_of(&tenant).await,
        Vec::<&str>::new(),
        "nothing of the tenant exists again"
    );
    let refused = amqp_login(&url).await;
    assert!(refused.is_err(), "the old password logs in nowhere");
    let record = record_of(&tenant).await.unwrap();
    assert_eq!(record.state, Phase::Offboarded);
    assert!(record.converged(), "{record:?}");
    assert_eq!(record.lease_holder, None, "the lease was given back");
}

#[tokio::test]
async fn a_repair_read_before_a_rotation_does_not_bring_the_old_password_back() {
    let app = app().await;
    let p = app.provisioner().await.unwrap();
    let (tenant, old_url) = provisioned().await;
    let stale = record_of(&tenant).await.unwrap();
    operator_ok(&["rotate", "--sub", tenant.as_str(), "--wait", "60"]);
    let new_url = kube_secret_data(&tenant).await.unwrap()["AMQP_URL"].clone();
    assert_ne!(new_url, old_url, "rotated");

    converge(p, &stale, ConvergeOptions::no_removal(app.budget()))
        .await
        .expect("the late repair");
    assert_eq!(
        kube_secret_data(&tenant).await.unwrap()["AMQP_URL"],
        new_url,
        "the Secret keeps the new password"
    );
    assert!(
        amqp_login(&old_url).await.is_err(),
        "the rotated-away password does not log in"
    );
    amqp_login(&new_url)
        .await
        .expect("the new password logs in");
    let record = record_of(&tenant).await.unwrap();
    assert_eq!(record.generation, stale.generation + 1);
    assert!(record.converged());
}

#[tokio::test]
async fn an_operator_finds_a_held_tenant_busy_and_the_change_stays_recorded() {
    let app = app().await;
    let p = app.provisioner().await.unwrap();
    let (tenant, _) = provisioned().await;
    // Another holder (a long move, a slow repair) has the tenant.
    let until = SystemTime::now() + Duration::from_secs(120);
    let Taken::Held(_, theirs) = p
        .registry
        .take_lease(&tenant, "someone else (pid 1)", until)
        .await
        .unwrap()
    else {
        panic!("the lease is free");
    };
    let options = ConvergeOptions {
        lease_wait: Duration::from_millis(300),
        ..ConvergeOptions::new(app.budget())
    };
    let e = change(p, &tenant, Change::Suspend, options)
        .await
        .expect_err("busy");
    assert_eq!(e.kind, FailureKind::Busy, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("tenant busy: someone else (pid 1) since ")
            && text.contains("your change is recorded and will be applied by it"),
        "{text}"
    );
    let recorded = record_of(&tenant).await.unwrap();
    assert_eq!(recorded.state, Phase::Suspended, "the change is recorded");
    assert!(!recorded.converged(), "and not applied beside the holder");
    let vhost = rabbit_admin_get(&format!("vhost-limits/{tenant}")).await;
    assert_ne!(
        vhost
            .as_ref()
            .and_then(|v| v[0]["value"]["max-connections"].as_i64()),
        Some(0),
        "nothing was applied: {vhost:?}"
    );

    // The holder lets go; the next convergence applies what the operator recorded.
    p.registry.give_back_lease(&tenant, &theirs).await.unwrap();
    converge(p, &recorded, ConvergeOptions::no_removal(app.budget()))
        .await
        .expect("applied once the lease is free");
    let applied = record_of(&tenant).await.unwrap();
    assert!(applied.converged(), "{applied:?}");
    let limits = rabbit_admin_get(&format!("vhost-limits/{tenant}"))
        .await
        .unwrap();
    assert_eq!(limits[0]["value"]["max-connections"], 0, "{limits}");
}

#[tokio::test]
async fn a_lease_that_ran_out_is_taken_over_and_its_holders_last_write_refused() {
    let app = app().await;
    let p = app.provisioner().await.unwrap();
    let (tenant, _) = provisioned().await;
    let registry = &p.registry;
    // A holder whose lease has already run out (its process froze past its deadline).
    let Taken::Held(first, old) = registry
        .take_lease(&tenant, "frozen (pid 1)", SystemTime::now())
        .await
        .unwrap()
    else {
        panic!("the lease is free");
    };
    let later = SystemTime::now() + Duration::from_secs(60);
    let Taken::Held(_, new) = registry
        .take_lease(&tenant, "next (pid 2)", later)
        .await
        .unwrap()
    else {
        panic!("a lease that ran out is free");
    };
    assert!(new.fence > old.fence, "the fencing number only grows");
    match registry
        .take_lease(&tenant, "third (pid 3)", later)
        .await
        .unwrap()
    {
        Taken::Busy(held) => assert_eq!(held.holder, "next (pid 2)"),
        other => panic!("held by next: {other:?}"),
    }
    // The frozen holder wakes up: its last write is refused, and it cannot give back the
    // lease that is no longer its.
    let marked = registry
        .record_converged(&tenant, first.version, true, Some(&old))
        .await
        .unwrap();
    assert!(!marked, "a taken-over holder's write is refused");
    registry.give_back_lease(&tenant, &old).await.unwrap();
    let record = record_of(&tenant).await.unwrap();
    assert_eq!(record.lease_holder.as_deref(), Some("next (pid 2)"));
    registry.give_back_lease(&tenant, &new).await.unwrap();
    assert_eq!(record_of(&tenant).await.unwrap().lease_holder, None);
}

#[tokio::test]
async fn a_plan_change_after_an_unapplied_rotation_still_closes_the_old_connections() {
    let app = app().await;
    let p = app.provisioner().await.unwrap();
    let (tenant, old_url) = provisioned().await;
    // A connection on the password about to be rotated away (a leaked one, say).
    let held = lapin::Connection::connect(&old_url, lapin::ConnectionProperties::default())
        .await
        .expect("connected on the old password");
    // The rotation is recorded, not applied (its run was cut off) …
    let before = record_of(&tenant).await.unwrap();
    let rotated = transition(&before, &Change::Rotate, &now())
        .unwrap()
        .unwrap();
    p.registry.transition(&before, &rotated).await.unwrap();
    // … and a plan change comes next, applied to its end.
    let options = ConvergeOptions {
        rollout_wait: Duration::from_secs(90),
        ..ConvergeOptions::new(app.budget())
    };
    let done = change(p, &tenant, Change::Plan("business".into()), options)
        .await
        .expect("the plan change, with the rotation it found pending");
    assert_eq!(done.after.pending.as_deref(), Some("rotate,plan"));
    assert!(
        done.converged.closed_connections >= 1,
        "the old password's connections are closed: {done:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while held.status().connected() {
        assert!(
            std::time::Instant::now() < deadline,
            "the old connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        amqp_login(&old_url).await.is_err(),
        "the old password is refused"
    );
    let new_url = kube_secret_data(&tenant).await.unwrap()["AMQP_URL"].clone();
    amqp_login(&new_url)
        .await
        .expect("the new password logs in");
    let record = record_of(&tenant).await.unwrap();
    assert!(record.converged() && record.pending.is_none(), "{record:?}");
    assert_eq!(record.plan, "business");
}
