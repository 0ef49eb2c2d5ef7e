//! Cells against the stack: its two brokers (RabbitMQ 3.10 and 4.0) declared as two cells in a
//! cells file of the test's own, reported from bulk listings (`tenantctl cells`), and a cell's
//! state changed in the registry (`tenantctl cell drain|open|close`), never in the file.

use serde_json::Value;

use crate::helpers::*;

/// The broker under test (POST_SIGNUP_TEST_BROKER) and the other one.
fn brokers() -> (String, String) {
    let under_test = var("STACK_RABBITMQ");
    let other = if under_test == "4.0" { "3.10" } else { "4.0" };
    (under_test, other.to_owned())
}

/// A cells file naming the stack's two brokers, the one under test first (cell `a`, where the
/// tenants recorded before cells live); returns its path.
fn cells_file(capacity: u32) -> String {
    let path = std::env::temp_dir().join(format!("cells-{}.yaml", uuid::Uuid::new_v4()));
    let cell = |name: &str, broker: &str| {
        let broker = broker.replace('.', "_");
        format!(
            "  - name: {name}\n    management_url: {}\n    amqp_url: {}\n    admin_secret_id: {}\n    capacity: {{vhosts: {capacity}, connections: 500}}\n",
            var(&format!("RABBITMQ_{broker}_MANAGEMENT_URL")),
            var(&format!("RABBITMQ_{broker}_AMQP_URL")),
            var("RABBITMQ_ADMIN_SECRET_ID"),
        )
    };
    let (a, b) = brokers();
    let text = format!("cells:\n{}{}", cell("a", &a), cell("b", &b));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
    let out = tenantctl_with(args, env, true);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn row<'a>(rows: &'a Value, name: &str) -> &'a Value {
    rows.as_array()
        .and_then(|r| r.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no cell {name} in {rows}"))
}

#[tokio::test]
async fn two_brokers_are_two_cells_reported_from_bulk_listings() {
    let (table, _) = fresh_registry_table().await;
    let cells = cells_file(20);
    let env = [
        ("CELLS_PATH", cells.as_str()),
        ("REGISTRY_TABLE", table.as_str()),
    ];
    // A tenant recorded before cells (cell `default`) lives in the first cell.
    let tenant = fresh_tenant();
    let (code, _, err) = run(&["provision", "--sub", tenant.as_str()], &env);
    assert_eq!(code, 0, "{err}");
    let (code, rows, err) = run(&["cells", "--output", "json"], &env);
    assert_eq!(code, 0, "{err}");
    let a = row(&rows, "a");
    let b = row(&rows, "b");
    assert!(
        a["broker_version"]
            .as_str()
            .unwrap()
            .starts_with(&brokers().0),
        "{a}"
    );
    assert!(
        b["broker_version"]
            .as_str()
            .unwrap()
            .starts_with(&brokers().1),
        "{b}"
    );
    assert_eq!(a["tenants"]["active"], 1, "{a}");
    assert_eq!(b["tenants"]["active"], 0, "{b}");
    assert_eq!(a["vhosts"]["capacity"], 20);
    assert!(
        a["vhosts"]["used"].as_u64().unwrap() >= 2,
        "the tenant's vhost and /: {a}"
    );
    assert!(
        a["connections_granted"].as_u64().unwrap() > 0,
        "its plan's connections: {a}"
    );
    assert_eq!(
        (&a["state"], &a["state_from"]),
        (&"open".into(), &"file".into())
    );
}

#[tokio::test]
async fn a_cell_is_drained_and_opened_in_the_registry_not_the_file() {
    let (table, _) = fresh_registry_table().await;
    let cells = cells_file(20);
    let env = [
        ("CELLS_PATH", cells.as_str()),
        ("REGISTRY_TABLE", table.as_str()),
    ];
    let (code, change, err) = run(&["cell", "drain", "b"], &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(change["before"], "open");
    assert_eq!(change["after"], "draining");
    let (_, rows, _) = run(&["cells", "--output", "json"], &env);
    assert_eq!(row(&rows, "b")["state"], "draining");
    assert_eq!(row(&rows, "b")["state_from"], "registry");
    assert_eq!(row(&rows, "a")["state"], "open");
    // The cell's item shares the registry table: listing tenants skips it.
    let tenant = fresh_tenant();
    assert_eq!(run(&["provision", "--sub", tenant.as_str()], &env).0, 0);
    let (code, listed, err) = run(&["list", "--output", "json"], &env);
    assert_eq!(code, 0, "{err}");
    let tenants: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["tenant"].as_str())
        .collect();
    assert_eq!(tenants, [tenant.as_str()]);
    let (_, change, _) = run(&["cell", "open", "b"], &env);
    assert_eq!(
        (&change["before"], &change["after"]),
        (&"draining".into(), &"open".into())
    );
    // An unknown cell changes nothing and says which cells there are.
    let (code, _, err) = run(&["cell", "close", "c"], &env);
    assert_eq!(code, 2);
    assert!(
        err.contains("no cell 'c'") && err.contains("cells: a, b"),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_cells_file_is_refused_naming_the_cell_and_the_field() {
    let cells = cells_file(20);
    let text = std::fs::read_to_string(&cells).unwrap().replacen(
        "capacity: {vhosts: 20,",
        "capacity: {vhosts: -1,",
        1,
    );
    std::fs::write(&cells, text).unwrap();
    let (code, _, err) = run(&["cells"], &[("CELLS_PATH", cells.as_str())]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("CELLS_PATH") && err.contains("cell 'a' (cells[0]): capacity.vhosts"),
        "{err}"
    );
}
