//! The reconciler: every confirmed user of the pool ends with a tenant as its record says —
//! including admin-created users, who never fire the trigger; offboarded tenants stay gone
//! (tombstones), a suspended tenant stays suspended through a repair, and prune works only
//! behind its guards. Each test runs in an installation of its own (user pool, namespace,
//! secret prefix, registry table), as a second installation sharing the broker and cluster
//! would, so it never sees other tests' tenants.

use aws_sdk_cognitoidentityprovider::types::AttributeType;
use post_signup::tenant::{TENANT_LABEL, TenantId};
use serde_json::Value;

use crate::helpers::*;

struct Installation {
    pool: String,
    namespace: String,
    prefix: String,
    table: String,
    /// A cells file (the stack's two brokers as cells `a` and `b`), when the test has one.
    cells: Option<String>,
}

impl Installation {
    async fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let namespace = format!("rec-{id}");
        // The shipped namespace and RBAC, for this namespace.
        for file in [
            "namespace.yaml",
            "rbac.yaml",
            "rbac-operator.yaml",
            "rbac-reconciler.yaml",
        ] {
            let text =
                std::fs::read_to_string(format!("{}/deploy/{file}", env!("CARGO_MANIFEST_DIR")))
                    .unwrap()
                    .replace("namespace: tenants", &format!("namespace: {namespace}"))
                    .replace("name: tenants", &format!("name: {namespace}"));
            // In both of the stack's clusters: a cell may run its backends in the second.
            kubectl_apply(&text);
            kubectl_apply_to(&var("STACK_KUBECONFIG_B"), &text);
        }
        let pool = new_pool(&format!("rec-{id}")).await;
        let (table, _) = fresh_registry_table().await;
        Self {
            pool,
            namespace,
            prefix: format!("post-signup/rec-{id}/"),
            table,
            cells: None,
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        let mut env = vec![
            ("USER_POOL_ID", self.pool.as_str()),
            ("TENANT_NAMESPACE", self.namespace.as_str()),
            ("TENANT_SECRET_PREFIX", self.prefix.as_str()),
            ("REGISTRY_TABLE", self.table.as_str()),
        ];
        if let Some(cells) = &self.cells {
            env.push(("CELLS_PATH", cells.as_str()));
        }
        env
    }

    /// The same installation seen through another user pool (a wrong USER_POOL_ID).
    async fn with_pool(&self, pool: String) -> Self {
        Self {
            pool,
            namespace: self.namespace.clone(),
            prefix: self.prefix.clone(),
            table: self.table.clone(),
            cells: self.cells.clone(),
        }
    }

    fn tenantctl(&self, args: &[&str]) -> (i32, Value) {
        let out = tenantctl_with(args, &self.env(), true);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{args:?}: no JSON on stdout; stderr: {stderr}"));
        (out.status.code().unwrap(), json)
    }

    /// `tenantctl ARGS` as the operator in this installation: exit code and stderr.
    fn run(&self, args: &[&str]) -> (i32, String) {
        let out = tenantctl_with(args, &self.env(), true);
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn reconcile(&self, extra: &[&str]) -> Value {
        let mut args = vec!["reconcile", "--output", "json"];
        args.extend_from_slice(extra);
        let (code, summary) = self.tenantctl(&args);
        assert_eq!(code, 0, "{summary}");
        summary
    }

    /// A confirmed user created by an administrator (no trigger fires); returns their sub.
    async fn confirmed_user(&self, name: &str) -> TenantId {
        let idp = cognito().await;
        idp.admin_create_user()
            .user_pool_id(&self.pool)
            .username(name)
            .user_attributes(
                AttributeType::builder()
                    .name("email")
                    .value(format!("{name}@example.com"))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        idp.admin_set_user_password()
            .user_pool_id(&self.pool)
            .username(name)
            .password("Correct-Horse-9-Battery")
            .permanent(true)
            .send()
            .await
            .unwrap();
        let user = idp
            .admin_get_user()
            .user_pool_id(&self.pool)
            .username(name)
            .send()
            .await
            .unwrap();
        let sub = user
            .user_attributes()
            .iter()
            .find(|a| a.name() == "sub")
            .and_then(|a| a.value())
            .unwrap();
        TenantId::parse(sub).unwrap()
    }

    fn parts(&self, tenant: &TenantId) -> Value {
        let (code, status) = self.tenantctl(&["status", "--sub", tenant.as_str()]);
        assert_eq!(code, 0, "{status}");
        status
    }
}

/// A user pool of the stand-in's; its id.
async fn new_pool(name: &str) -> String {
    cognito()
        .await
        .create_user_pool()
        .pool_name(name)
        .send()
        .await
        .unwrap()
        .user_pool
        .unwrap()
        .id
        .unwrap()
}

async fn cognito() -> aws_sdk_cognitoidentityprovider::Client {
    aws_sdk_cognitoidentityprovider::Client::new(&aws_config(&settings_with(&[])).await)
}

fn kubectl_apply(manifest: &str) {
    kubectl_apply_to(&var("KUBECONFIG"), manifest);
}

fn kubectl_apply_to(kubeconfig: &str, manifest: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(var("STACK_KUBECTL"))
        .args(["--kubeconfig", kubeconfig, "apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "kubectl apply");
}

fn kubectl_delete(namespace: &str, what: &str) {
    kubectl_delete_in(&var("KUBECONFIG"), namespace, what);
}

fn kubectl_delete_in(kubeconfig: &str, namespace: &str, what: &str) {
    let ok = std::process::Command::new(var("STACK_KUBECTL"))
        .args(["--kubeconfig", kubeconfig, "-n", namespace, "delete", what])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kubectl delete {what}");
}

/// Whether `what` (`deployment/NAME`) exists in `namespace` of the cluster `kubeconfig` names.
fn kubectl_exists(kubeconfig: &str, namespace: &str, what: &str) -> bool {
    let out = std::process::Command::new(var("STACK_KUBECTL"))
        .args([
            "--kubeconfig",
            kubeconfig,
            "-n",
            namespace,
            "get",
            what,
            "--ignore-not-found",
            "-o",
            "name",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "kubectl get {what}: {out:?}");
    !out.stdout.is_empty()
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn reconcile_repairs_provisions_reports_and_prunes() {
    let inst = Installation::new().await;
    let complete = inst.confirmed_user("complete").await;
    let broken = inst.confirmed_user("broken").await;
    let never = inst.confirmed_user("admin-created").await;
    let orphan = fresh_tenant();
    for tenant in [&complete, &broken, &orphan] {
        let (code, out) = inst.tenantctl(&["provision", "--sub", tenant.as_str()]);
        assert_eq!(code, 0, "{out}");
    }
    kubectl_delete(
        &inst.namespace,
        &format!("deployment/{}", broken.deployment_name()),
    );

    let dry = inst.reconcile(&["--dry-run"]);
    assert_eq!(dry["users"], 3, "{dry}");
    assert_eq!(dry["complete"], 1, "{dry}");
    assert_eq!(dry["repaired"], 2, "would repair: {dry}");
    assert_eq!(names(&dry["orphans"]), [orphan.to_string()], "{dry}");
    assert_eq!(
        inst.parts(&never)["complete"],
        false,
        "a dry run changes nothing"
    );

    let run = inst.reconcile(&[]);
    assert_eq!(
        (run["repaired"].as_u64(), run["failed"].as_u64()),
        (Some(2), Some(0)),
        "{run}"
    );
    assert_eq!(
        names(&run["orphans"]),
        [orphan.to_string()],
        "reported, not removed: {run}"
    );
    for tenant in [&complete, &broken, &never] {
        assert_eq!(inst.parts(tenant)["complete"], true, "{tenant}");
    }
    assert_eq!(
        inst.parts(&orphan)["complete"],
        true,
        "without --prune the orphan stays"
    );

    // Guarded: a record younger than the minimum age is never pruned…
    let young = inst.reconcile(&["--prune", "--max-fraction", "0.5"]);
    assert_eq!(young["pruned"], 0, "{young}");
    // …and a run that would prune more than the allowed fraction (1 of 4 > 10 %) is refused.
    let (code, refused) = inst.run(&["reconcile", "--prune", "--min-age", "0s"]);
    assert_eq!(code, 2, "refused: {refused}");
    assert!(
        refused.contains("refused: the run would prune 1 of this installation's 4 tenants"),
        "{refused}"
    );
    assert_eq!(
        inst.parts(&orphan)["complete"],
        true,
        "refused means nothing deleted"
    );
    let pruned = inst.reconcile(&["--prune", "--min-age", "0s", "--max-fraction", "0.5"]);
    assert_eq!(pruned["pruned"], 1, "{pruned}");
    assert_eq!(inst.parts(&orphan)["record"]["state"], "offboarded");
    let gone = inst.parts(&orphan);
    assert_eq!(
        gone["missing"].as_array().unwrap().len(),
        6,
        "nothing left: {gone}"
    );

    let again = inst.reconcile(&[]);
    assert_eq!(
        (
            again["complete"].as_u64(),
            again["repaired"].as_u64(),
            again["orphans"].as_array().unwrap().len()
        ),
        (Some(3), Some(0), 0),
        "a second run finds nothing to do: {again}"
    );
}

impl Installation {
    async fn delete_user(&self, name: &str) {
        cognito()
            .await
            .admin_delete_user()
            .user_pool_id(&self.pool)
            .username(name)
            .send()
            .await
            .unwrap();
    }

    fn ok(&self, args: &[&str]) -> Value {
        let (code, out) = self.tenantctl(args);
        assert_eq!(code, 0, "{args:?}: {out}");
        out
    }

    /// The tenant's AMQP URL, from its Secret in this installation's namespace.
    async fn amqp_url(&self, tenant: &TenantId) -> String {
        use base64::Engine as _;
        let secret = kube_admin_get(&format!(
            "/api/v1/namespaces/{}/secrets/{}",
            self.namespace,
            tenant.secret_name()
        ))
        .await
        .expect("the tenant's secret");
        let url = secret["data"]["AMQP_URL"].as_str().unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(url)
                .unwrap(),
        )
        .unwrap()
    }
}

#[tokio::test]
async fn an_offboarded_tenant_stays_gone_while_its_user_is_confirmed_until_restored() {
    let inst = Installation::new().await;
    let tenant = inst.confirmed_user("leaver").await;
    inst.ok(&["provision", "--sub", tenant.as_str()]);
    // Rotated (say the password leaked), then offboarded; the user stays CONFIRMED.
    inst.ok(&["rotate", "--sub", tenant.as_str(), "--wait", "90"]);
    inst.ok(&["deprovision", "--sub", tenant.as_str()]);
    let run = inst.reconcile(&[]);
    assert_eq!(names(&run["tombstones"]), [tenant.to_string()], "{run}");
    assert_eq!(run["repaired"], 0, "nothing comes back: {run}");
    let parts = inst.parts(&tenant);
    assert_eq!(parts["missing"].as_array().unwrap().len(), 6, "{parts}");
    assert_eq!(parts["state"], "offboarded");
    // Only on purpose: restore, with a password that was never the leaked one.
    let restored = inst.ok(&["restore", "--sub", tenant.as_str()]);
    assert_eq!(restored["after"]["generation"], 2, "{restored}");
    assert_eq!(inst.parts(&tenant)["complete"], true);
    amqp_login(&inst.amqp_url(&tenant).await)
        .await
        .expect("logs in after restore");
    let again = inst.reconcile(&[]);
    assert_eq!(
        (again["complete"].as_u64(), again["repaired"].as_u64()),
        (Some(1), Some(0)),
        "{again}"
    );
}

#[tokio::test]
async fn a_suspended_tenant_that_loses_its_secret_is_repaired_and_stays_suspended() {
    let inst = Installation::new().await;
    let tenant = inst.confirmed_user("paused").await;
    inst.ok(&["provision", "--sub", tenant.as_str()]);
    let url = inst.amqp_url(&tenant).await;
    inst.ok(&["suspend", "--sub", tenant.as_str()]);
    kubectl_delete(&inst.namespace, &format!("secret/{}", tenant.secret_name()));
    let run = inst.reconcile(&[]);
    assert_eq!(run["repaired"], 1, "{run}");
    let parts = inst.parts(&tenant);
    assert_eq!(parts["missing"], serde_json::json!([]), "{parts}");
    assert_eq!(parts["state"], "suspended", "{parts}");
    assert_eq!(parts["drift"], serde_json::json!([]), "{parts}");
    assert_eq!(parts["kubernetes"]["deployment"]["replicas"], 0, "no pods");
    assert_eq!(parts["rabbitmq"]["vhost_limits"]["max-connections"], 0);
    assert_eq!(
        inst.amqp_url(&tenant).await,
        url,
        "the same password generation"
    );
    assert!(amqp_login(&url).await.is_err(), "still no AMQP login");
}

#[tokio::test]
async fn prune_is_refused_for_an_empty_pool_and_never_takes_retained_data() {
    let inst = Installation::new().await;
    let a = inst.confirmed_user("a").await;
    let b = inst.confirmed_user("b").await;
    let keeper = inst.confirmed_user("keeper").await;
    for t in [&a, &b, &keeper] {
        inst.ok(&["provision", "--sub", t.as_str()]);
    }
    amqp_login(&inst.amqp_url(&keeper).await).await.unwrap(); // a queue in its vhost
    inst.ok(&["deprovision", "--sub", keeper.as_str(), "--retain-data"]);
    inst.delete_user("keeper").await;

    // A valid but wrong (here: empty) pool makes every tenant an orphan: refused, nothing done.
    let empty = new_pool(&format!("empty-{}", uuid::Uuid::new_v4().simple())).await;
    let wrong = inst.with_pool(empty).await;
    let (code, stderr) = wrong.run(&["reconcile", "--prune", "--min-age", "0s"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nothing was deleted"), "{stderr}");
    for t in [&a, &b] {
        assert_eq!(inst.parts(t)["complete"], true, "{t} untouched");
        assert_eq!(inst.parts(t)["record"]["state"], "active");
    }
    // The right pool, every guard open: the retained vhost is not an orphan and survives.
    let run = inst.reconcile(&["--prune", "--min-age", "0s", "--max-fraction", "1"]);
    assert_eq!(run["pruned"], 0, "{run}");
    assert_eq!(run["orphans"], serde_json::json!([]), "{run}");
    assert!(
        rabbit_admin_get(&format!("vhosts/{keeper}"))
            .await
            .is_some(),
        "the retained vhost stays"
    );
    let queues = rabbit_admin_get(&format!("queues/{keeper}")).await.unwrap();
    assert_eq!(queues.as_array().unwrap().len(), 1, "with its queue");
}

#[tokio::test]
async fn disabled_users_are_reported_not_provisioned() {
    let inst = Installation::new().await;
    let tenant = inst.confirmed_user("disabled").await;
    cognito()
        .await
        .admin_disable_user()
        .user_pool_id(&inst.pool)
        .username("disabled")
        .send()
        .await
        .unwrap();
    let run = inst.reconcile(&[]);
    assert_eq!(names(&run["disabled"]), [tenant.to_string()], "{run}");
    assert_eq!(run["repaired"], 0, "{run}");
    assert_eq!(inst.parts(&tenant)["missing"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn the_scheduled_reconciler_repairs_under_its_own_identity_which_removes_nothing() {
    use post_signup::ops::reconcile::{ReconcileOptions, reconcile};
    let inst = Installation::new().await;
    let tenant = inst.confirmed_user("repair-me").await;
    inst.ok(&["provision", "--sub", tenant.as_str()]);
    // A tenant that lost its Secret and its Deployment (a person deleted them by hand).
    for path in [
        format!(
            "/api/v1/namespaces/{}/secrets/{}",
            inst.namespace,
            tenant.secret_name()
        ),
        format!(
            "/apis/apps/v1/namespaces/{}/deployments/{}",
            inst.namespace,
            tenant.deployment_name()
        ),
    ] {
        kube_admin_delete(&path).await;
    }
    assert_eq!(inst.parts(&tenant)["complete"], false);
    let app = reconciler_app_with(&inst.env()).await;
    let p = app.provisioner().await.unwrap();
    let pool = post_signup::outside::cognito::UserPool::new(cognito().await, &inst.pool);
    let mut options = ReconcileOptions::new(app.budget(), 4);
    options.may_remove = false;
    let run = reconcile(p, &pool, options, |_, _| {}).await.unwrap();
    assert_eq!((run.repaired, run.failed), (1, 0), "{run:?}");
    assert_eq!(inst.parts(&tenant)["complete"], true);
}

#[tokio::test]
async fn the_scheduled_reconciler_reports_an_unfinished_offboarding_and_removes_nothing() {
    use post_signup::ops::reconcile::{ReconcileOptions, reconcile};
    use post_signup::tenant::transition::{Change, transition};
    let inst = Installation::new().await;
    let tenant = inst.confirmed_user("half-gone").await;
    inst.ok(&["provision", "--sub", tenant.as_str()]);
    // An operator's offboarding that was recorded but never applied (it died half-way).
    // The scheduled function runs as its own identity (deploy/rbac-reconciler.yaml: no delete).
    let app = reconciler_app_with(&inst.env()).await;
    let p = app.provisioner().await.unwrap();
    let record = p.registry.get(&tenant).await.unwrap().unwrap();
    let gone = transition(&record, &Change::Offboard { retain_data: false }, "t")
        .unwrap()
        .unwrap();
    p.registry.transition(&record, &gone).await.unwrap();
    let pool = post_signup::outside::cognito::UserPool::new(cognito().await, &inst.pool);
    // The scheduled function may not remove: it reports, and deletes nothing.
    let mut options = ReconcileOptions::new(app.budget(), 4);
    options.may_remove = false;
    let run = reconcile(p, &pool, options, |_, _| {}).await.unwrap();
    assert_eq!(run.unfinished_offboardings, [tenant.to_string()], "{run:?}");
    assert_eq!((run.failed, run.repaired), (0, 0), "{run:?}");
    assert_eq!(inst.parts(&tenant)["complete"], true, "nothing removed");
    // Nor could it: its identity may not delete in the cluster.
    let refused = p
        .clusters
        .default_cluster()
        .await
        .unwrap()
        .delete::<k8s_openapi::api::apps::v1::Deployment>(&tenant.deployment_name())
        .await
        .expect_err("the reconciler's identity cannot delete a Deployment");
    assert_eq!(refused.status, Some(403), "{refused}");
    // An operator's run finishes it (access first, then the rest).
    let run = inst.reconcile(&[]);
    assert_eq!(run["repaired"], 1, "{run}");
    assert_eq!(inst.parts(&tenant)["missing"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn reconcile_repairs_tenants_on_both_cells_each_on_its_own_broker() {
    let mut inst = Installation::new().await;
    inst.cells = Some(cells_file_with(20, 20, 500));
    // One tenant in each cell: the other cell drains while each is placed.
    inst.ok(&["cell", "drain", "b"]);
    let in_a = inst.confirmed_user("in-a").await;
    inst.ok(&["provision", "--sub", in_a.as_str()]);
    inst.ok(&["cell", "open", "b"]);
    inst.ok(&["cell", "drain", "a"]);
    let in_b = inst.confirmed_user("in-b").await;
    inst.ok(&["provision", "--sub", in_b.as_str()]);
    inst.ok(&["cell", "open", "a"]);
    assert_eq!(inst.parts(&in_a)["record"]["cell"], "a");
    assert_eq!(inst.parts(&in_b)["record"]["cell"], "b");
    // Each loses its RabbitMQ user, on its own broker.
    let env = inst.env();
    let app = app_with(&env).await;
    let p = app.provisioner().await.unwrap();
    for (tenant, cell) in [(&in_a, "a"), (&in_b, "b")] {
        let broker = p.brokers.get(cell).await.unwrap();
        broker
            .rabbitmq
            .delete_user(tenant.rabbitmq_user())
            .await
            .unwrap();
        assert_eq!(inst.parts(tenant)["complete"], false);
    }
    let run = inst.reconcile(&[]);
    assert_eq!(
        (run["repaired"].as_u64(), run["failed"].as_u64()),
        (Some(2), Some(0)),
        "{run}"
    );
    assert_eq!(run["strays"], serde_json::json!([]), "{run}");
    for (tenant, cell, other) in [(&in_a, "a", "b"), (&in_b, "b", "a")] {
        assert_eq!(inst.parts(tenant)["complete"], true, "{tenant}");
        let user = |c: &'static str| async move {
            p.brokers
                .get(c)
                .await
                .unwrap()
                .rabbitmq
                .user(tenant.rabbitmq_user())
                .await
                .unwrap()
                .is_some()
        };
        assert!(user(cell).await, "{tenant}'s user back on {cell}");
        assert!(!user(other).await, "{tenant}'s user not on {other}");
        // Its credentials carry its own cell's broker.
        let url = inst.amqp_url(tenant).await;
        let port = url::Url::parse(&url).unwrap().port().unwrap();
        let broker = if cell == "a" {
            stack_brokers().0
        } else {
            stack_brokers().1
        };
        let expected = var(&format!("RABBITMQ_{}_AMQP_URL", broker.replace('.', "_")));
        assert_eq!(
            Some(port),
            url::Url::parse(&expected).unwrap().port(),
            "{url}"
        );
        amqp_login(&url).await.unwrap();
    }
}

/// The stack's two brokers as cells `a` (backends in the default cluster) and `b`, whose
/// backends run in the stack's second cluster, declared by `cluster` (a YAML mapping).
fn cells_with_cluster_b(cluster: &str) -> String {
    let path = cells_file_with(20, 20, 500);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("    cluster: {cluster}\n"));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_cell_with_its_own_cluster_runs_repairs_moves_and_removes_its_backends_there() {
    let mut inst = Installation::new().await;
    let b = var("STACK_KUBECONFIG_B");
    let a = var("KUBECONFIG");
    // Cluster B's endpoint and CA come from DescribeCluster of its name.
    inst.cells = Some(cells_with_cluster_b(&format!(
        "{{name: {}}}",
        var("STACK_CLUSTER_B")
    )));
    inst.ok(&["cell", "drain", "a"]);
    let t = inst.confirmed_user("in-b").await;
    inst.ok(&["provision", "--sub", t.as_str()]);
    inst.ok(&["cell", "open", "a"]);
    let deployment = format!("deployment/{}", t.deployment_name());
    let secret = format!("secret/{}", t.secret_name());
    let ns = inst.namespace.clone();
    for what in [&deployment, &secret] {
        assert!(kubectl_exists(&b, &ns, what), "{what} in cluster B");
        assert!(!kubectl_exists(&a, &ns, what), "{what} not in cluster A");
    }
    let parts = inst.parts(&t);
    assert_eq!(parts["record"]["cell"], "b");
    assert_eq!(
        parts["kubernetes"]["cluster"],
        var("STACK_CLUSTER_B"),
        "{parts}"
    );
    assert_eq!(parts["complete"], true, "{parts}");

    // A person deletes its backend in cluster B: the reconciler puts it back there, only there.
    kubectl_delete_in(&b, &ns, &deployment);
    assert_eq!(inst.parts(&t)["complete"], false);
    let run = inst.reconcile(&[]);
    assert_eq!(
        (run["repaired"].as_u64(), run["failed"].as_u64()),
        (Some(1), Some(0)),
        "{run}"
    );
    assert!(kubectl_exists(&b, &ns, &deployment));
    assert!(!kubectl_exists(&a, &ns, &deployment));
    assert_eq!(run["strays"], serde_json::json!([]), "{run}");

    // Moved to a: its backend runs in the default cluster and cluster B's copy is gone.
    let moved = inst.ok(&["move", "--sub", t.as_str(), "--to", "a", "--wait", "90"]);
    assert_eq!(moved["steps"].as_array().unwrap().last().unwrap(), "done");
    for what in [&deployment, &secret] {
        assert!(
            kubectl_exists(&a, &ns, what),
            "{what} in cluster A after the move"
        );
        assert!(!kubectl_exists(&b, &ns, what), "{what} left in cluster B");
    }
    let parts = inst.parts(&t);
    assert_eq!(parts["kubernetes"]["cluster"], var("EKS_CLUSTER_NAME"));
    assert_eq!(parts["complete"], true, "{parts}");
    amqp_login(&inst.amqp_url(&t).await).await.unwrap();

    // A backend left in the other cluster (a move interrupted by hand) is a stray: reported,
    // never removed.
    let stray = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {}\n  namespace: {ns}\n  labels: {{{TENANT_LABEL}: \"{}\"}}\n",
        t.secret_name(),
        t.as_str()
    );
    kubectl_apply_to(&b, &stray);
    let run = inst.reconcile(&[]);
    let strays = names(&run["strays"]);
    assert_eq!(strays.len(), 1, "{run}");
    assert!(
        strays[0].contains(&format!("a backend in cluster {}", var("STACK_CLUSTER_B"))),
        "{strays:?}"
    );
    assert!(kubectl_exists(&b, &ns, &secret), "a stray is never removed");
    kubectl_delete_in(&b, &ns, &secret);

    // Offboarded from a, where it lives now.
    inst.ok(&["cell", "drain", "a"]);
    let u = inst.confirmed_user("in-b-again").await;
    inst.ok(&["provision", "--sub", u.as_str()]);
    let gone = inst.ok(&["deprovision", "--sub", u.as_str()]);
    assert_eq!(
        gone["converged"]["removed"]["kubernetes_deployment"], true,
        "{gone}"
    );
    assert!(!kubectl_exists(
        &b,
        &ns,
        &format!("deployment/{}", u.deployment_name())
    ));
}

#[tokio::test]
async fn a_cells_cluster_is_reached_with_its_own_endpoint_ca_and_token() {
    use base64::Engine as _;
    let b64 =
        |path: &str| base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap());
    let mut inst = Installation::new().await;
    let b = var("STACK_KUBECONFIG_B");
    let ns = inst.namespace.clone();
    let declared = |name: &str, ca: &str| {
        format!(
            "{{name: {name}, endpoint: '{}', ca_data: '{}'}}",
            var("STACK_KUBE_API_B"),
            b64(&var(ca))
        )
    };
    // Declared in the file: no DescribeCluster is needed.
    inst.cells = Some(cells_with_cluster_b(&declared(
        &var("STACK_CLUSTER_B"),
        "STACK_CA_FILE_B",
    )));
    inst.ok(&["cell", "drain", "a"]);
    let t = inst.confirmed_user("declared").await;
    inst.ok(&["provision", "--sub", t.as_str()]);
    assert!(kubectl_exists(
        &b,
        &ns,
        &format!("deployment/{}", t.deployment_name())
    ));

    // The other cluster's CA: cluster B's certificate is not trusted, and tenantctl says which
    // cluster failed.
    inst.cells = Some(cells_with_cluster_b(&declared(
        &var("STACK_CLUSTER_B"),
        "STACK_CA_FILE",
    )));
    let (code, err) = inst.run(&["status", "--sub", t.as_str()]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains(&format!("cluster '{}'", var("STACK_CLUSTER_B"))),
        "{err}"
    );
    // The trigger in that state: a sign-up placed in b is handed off (its cluster's step
    // failed; nothing is lost), and one placed in a is not hurt by b's cluster.
    let queue = fresh_queue().await;
    let mut env = inst.env();
    env.push(("HANDOFF_QUEUE_URL", queue.as_str()));
    let app = app_with(&env).await;
    let sign_up = |t: TenantId| {
        let app = &app;
        async move {
            let event = signup_event(t.as_str());
            post_signup::lambda::trigger::handle_reporting(
                app,
                lambda_runtime::LambdaEvent::new(event, lambda_runtime::Context::default()),
            )
            .await
            .expect("the trigger answers")
            .1
        }
    };
    let in_b = fresh_tenant();
    assert_eq!(
        sign_up(in_b.clone()).await,
        post_signup::lambda::trigger::Finish::HandedOff
    );
    assert_eq!(queue_bodies(&queue).await.len(), 1);
    inst.ok(&["cell", "open", "a"]);
    inst.ok(&["cell", "drain", "b"]);
    let in_a = fresh_tenant();
    assert_eq!(
        sign_up(in_a.clone()).await,
        post_signup::lambda::trigger::Finish::Provisioned
    );
    assert_eq!(app.registry.get(&in_a).await.unwrap().unwrap().cell, "a");
    inst.ok(&["cell", "open", "b"]);
    inst.ok(&["cell", "drain", "a"]);

    // A token bound to another cluster's name is refused by B's authenticator (401).
    inst.cells = Some(cells_with_cluster_b(&declared(
        "post-signup-local-c",
        "STACK_CA_FILE_B",
    )));
    let (code, err) = inst.run(&["status", "--sub", t.as_str()]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("401") || err.to_lowercase().contains("unauthorized"),
        "{err}"
    );
}

#[tokio::test]
async fn vhosts_made_ahead_survive_a_prune_and_are_never_taken_for_tenants() {
    let mut inst = Installation::new().await;
    inst.cells = Some(cells_file_pooled(20, 20, 500, Some(2)));
    inst.ok(&["cell", "drain", "b"]);
    // A tenant whose user is gone, so the prune has something of its own to do (placed before
    // the pool is filled: it creates its own vhost).
    let gone = inst.confirmed_user("gone").await;
    inst.ok(&["provision", "--sub", gone.as_str()]);
    let (code, refilled) = inst.tenantctl(&["pool-refill", "--cell", "a", "--min-age", "0"]);
    assert_eq!(code, 0, "{refilled}");
    assert_eq!(refilled[0]["made"], 2, "{refilled}");
    let pooled: Vec<String> = {
        let app = app_with(&inst.env()).await;
        app.registry.cell_items(&["a"]).await.unwrap()["a"]
            .ready_of(post_signup::tenant::plan::QueueType::Quorum)
            .to_vec()
    };
    assert_eq!(pooled.len(), 2);
    inst.delete_user("gone").await;
    let run = inst.reconcile(&["--prune", "--min-age", "0s", "--max-fraction", "1"]);
    assert_eq!(run["pruned"], 1, "{run}");
    assert_eq!(names(&run["orphans"]), [gone.to_string()], "{run}");
    assert_eq!(run["unrecorded"], serde_json::json!([]), "{run}");
    for v in &pooled {
        assert!(
            rabbit_admin_get(&format!("vhosts/{v}")).await.is_some(),
            "{v} survives the prune"
        );
        assert!(!run.to_string().contains(v.as_str()), "{v} named in {run}");
    }
    let pools = run["pools"].as_array().unwrap();
    assert_eq!(pools[0]["cell"], "a", "{run}");
    assert_eq!(pools[0]["ready"]["quorum"], 2, "{run}");
}

#[tokio::test]
async fn a_claim_whose_sign_up_died_is_finished_on_its_vhost_by_the_reconciler() {
    let mut inst = Installation::new().await;
    inst.cells = Some(cells_file_pooled(20, 20, 500, Some(1)));
    inst.ok(&["cell", "drain", "b"]);
    inst.ok(&["pool-refill", "--cell", "a", "--min-age", "0"]);
    let tenant = inst.confirmed_user("died").await;
    // The sign-up placed its tenant (the claim and the record, one transaction) and died
    // before anything else.
    let app = app_with(&inst.env()).await;
    let record = post_signup::tenant::record::TenantRecord::new(
        &tenant,
        Some(&inst.pool),
        &app.plans,
        "sign-up",
    );
    let placed = app.placement.place(&record).await.unwrap();
    let vhost = placed.record().vhost.clone().expect("claimed");
    assert_eq!(inst.parts(&tenant)["complete"], false);
    let run = inst.reconcile(&[]);
    assert_eq!(run["repaired"], 1, "{run}");
    let parts = inst.parts(&tenant);
    assert_eq!(parts["complete"], true, "{parts}");
    assert_eq!(parts["record"]["vhost"], vhost.as_str(), "{parts}");
    let url = inst.amqp_url(&tenant).await;
    assert!(url.ends_with(&format!("/{vhost}")), "{url}");
    amqp_login(&url).await.unwrap();
}
