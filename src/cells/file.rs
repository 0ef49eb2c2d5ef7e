//! Cells: independent units of capacity. A cell is a broker (management and AMQP URLs, the
//! admin secret, a capacity in vhosts and connections) and optionally a cluster of its own.
//! They are declared in a file (`CELLS_PATH`, shaped like `deploy/cells.yaml`); without one, the
//! single-broker settings (`RABBITMQ_*`) are one implicit cell named `default`, with no declared
//! capacity. A cell's state (`open`, `draining`, `closed`) starts as the file says and is changed
//! on a running system in the registry (`tenantctl cell drain NAME`), never by editing the file.
//!
//! Every error names the file, the cell and the field.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cells::cluster::{ClusterAccess, ClusterName};
use crate::tenant::plan::QueueType;
use serde_json::Value;
use url::Url;

/// The implicit cell of a single-broker installation (and every record made before cells);
/// defined with the record, which names it.
pub use crate::tenant::record::DEFAULT_CELL;
const MAX_NAME: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellState {
    /// Takes new tenants.
    Open,
    /// Takes no new tenant; its tenants stay (and may be moved away).
    Draining,
    /// Takes no new tenant and is expected to be empty.
    Closed,
}

impl CellState {
    pub fn as_str(self) -> &'static str {
        match self {
            CellState::Open => "open",
            CellState::Draining => "draining",
            CellState::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(CellState::Open),
            "draining" => Some(CellState::Draining),
            "closed" => Some(CellState::Closed),
            _ => None,
        }
    }
}

/// How much a cell's broker holds. `None`: not declared (the implicit cell).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capacity {
    pub vhosts: Option<u32>,
    pub connections: Option<u64>,
}

/// The vhosts a cell keeps made ahead (`pool: {size, queue_types}`): `size` ready, unclaimed
/// vhosts of each queue type, so a sign-up whose plan's default queue type is among them claims
/// one instead of creating it. Each holds a seat of the cell's `capacity.vhosts` from the
/// moment it is reserved, exactly as a tenant's vhost does (a claim moves the seat to the
/// tenant), so the pool and the tenants together never pass the broker's limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pool {
    pub size: u32,
    pub queue_types: Vec<QueueType>,
}

/// A cell's own cluster, when its tenants' backends run elsewhere than the default cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellCluster {
    pub name: ClusterName,
    /// Declared in the file; `None`: `DescribeCluster` of `name`.
    pub access: Option<ClusterAccess>,
}

/// Shown as `{name, endpoint}`: the CA is long and says nothing to a reader.
impl Serialize for CellCluster {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut out = s.serialize_struct("CellCluster", 2)?;
        out.serialize_field("name", self.name.as_str())?;
        out.serialize_field(
            "endpoint",
            &self.access.as_ref().map(|a| a.endpoint.as_str()),
        )?;
        out.end()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub name: String,
    pub management_url: Url,
    pub amqp_url: Url,
    pub admin_secret_id: String,
    pub web_stomp_url: Option<Url>,
    pub capacity: Capacity,
    /// The state the file declares; the registry's, once set, wins.
    pub state: CellState,
    pub cluster: Option<CellCluster>,
    /// Vhosts made ahead; `None`: every sign-up creates its vhost.
    pub pool: Option<Pool>,
}

impl Cell {
    /// The pool's size for `queue_type` (0: none kept).
    pub fn pool_size(&self, queue_type: QueueType) -> u32 {
        self.pool
            .as_ref()
            .filter(|p| p.queue_types.contains(&queue_type))
            .map_or(0, |p| p.size)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cells {
    cells: Vec<Cell>,
    /// Where they came from: a file's path, or the settings (the implicit cell).
    pub source: String,
    /// Declared in a file (false: the implicit cell of the single-broker settings).
    pub declared: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CellsError {
    #[error("cells file {source_name}: cannot read: {cause}")]
    Read { source_name: String, cause: String },
    #[error("cells file {source_name}: {problem}")]
    Invalid {
        source_name: String,
        problem: String,
    },
}

impl Cells {
    /// The implicit cell of the single-broker settings.
    pub fn implicit(management_url: Url, amqp_url: Url, admin_secret_id: &str) -> Self {
        Self {
            cells: vec![Cell {
                name: DEFAULT_CELL.to_owned(),
                management_url,
                amqp_url,
                admin_secret_id: admin_secret_id.to_owned(),
                web_stomp_url: None,
                capacity: Capacity {
                    vhosts: None,
                    connections: None,
                },
                state: CellState::Open,
                cluster: None,
                pool: None,
            }],
            source: "the RABBITMQ_* settings".to_owned(),
            declared: false,
        }
    }

    pub fn load(path: &Path) -> Result<Self, CellsError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| CellsError::Read {
            source_name: name.clone(),
            cause: e.to_string(),
        })?;
        Self::parse(&name, &text)
    }

    pub fn parse(source_name: &str, yaml: &str) -> Result<Self, CellsError> {
        let invalid = |problem: String| CellsError::Invalid {
            source_name: source_name.to_owned(),
            problem,
        };
        let doc: Value =
            serde_saphyr::from_str(yaml).map_err(|e| invalid(format!("not valid YAML: {e}")))?;
        let Some(map) = doc.as_object() else {
            return Err(invalid("must be a mapping with a `cells` list".into()));
        };
        if let Some(unknown) = map.keys().find(|k| k.as_str() != "cells") {
            return Err(invalid(format!("unknown top-level key '{unknown}'")));
        }
        let list = map
            .get("cells")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("must have a `cells` list".into()))?;
        if list.is_empty() {
            return Err(invalid("declares no cell".into()));
        }
        let mut cells = Vec::new();
        let mut names = HashSet::new();
        for (i, raw) in list.iter().enumerate() {
            let cell = parse_cell(i, raw).map_err(&invalid)?;
            if !names.insert(cell.name.clone()) {
                return Err(invalid(format!(
                    "cell '{}' (cells[{i}]): name: declared twice",
                    cell.name
                )));
            }
            if let Some(own) = &cell.cluster
                && let Some(other) = cells.iter().find(|c: &&Cell| {
                    c.cluster
                        .as_ref()
                        .is_some_and(|o| o.name == own.name && o != own)
                })
            {
                return Err(invalid(format!(
                    "cell '{}' (cells[{i}]): cluster: '{}' is declared differently by cell '{}' (one cluster, one endpoint and CA)",
                    cell.name, own.name, other.name
                )));
            }
            cells.push(cell);
        }
        Ok(Self {
            cells,
            source: source_name.to_owned(),
            declared: true,
        })
    }

    pub fn all(&self) -> &[Cell] {
        &self.cells
    }

    pub fn get(&self, name: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.name == name)
    }

    /// The cell a record's cell name means: itself, or — for records written before cells were
    /// declared (`default`) — the first cell of a file that declares no `default`.
    pub fn resolve(&self, name: &str) -> Option<&Cell> {
        self.get(name).or_else(|| {
            (name == DEFAULT_CELL && self.get(DEFAULT_CELL).is_none()).then(|| self.first())
        })
    }

    /// The cell a record names, or why there is none.
    pub fn require(&self, name: &str) -> Result<&Cell, UnknownCell> {
        self.resolve(name).ok_or_else(|| UnknownCell {
            cell: name.to_owned(),
            file: self.source.clone(),
            declared: self.names().join(", "),
        })
    }

    /// The first cell: where tenants recorded before cells (cell `default`) live when the
    /// file does not declare a `default` cell of its own.
    pub fn first(&self) -> &Cell {
        &self.cells[0]
    }

    pub fn names(&self) -> Vec<&str> {
        self.cells.iter().map(|c| c.name.as_str()).collect()
    }
}

/// A record names a cell the cells file does not declare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a tenant lives in cell '{cell}', which {file} does not declare (declared: {declared})")]
pub struct UnknownCell {
    pub cell: String,
    pub file: String,
    pub declared: String,
}

fn parse_cell(i: usize, raw: &Value) -> Result<Cell, String> {
    let Some(map) = raw.as_object() else {
        return Err(format!("cells[{i}]: must be a mapping"));
    };
    let name = match map.get("name").and_then(Value::as_str) {
        Some(n) if valid_name(n) => n.to_owned(),
        Some(n) => {
            return Err(format!(
                "cells[{i}]: name: '{n}' must be 1-{MAX_NAME} lowercase letters, digits or '-', starting with a letter"
            ));
        }
        None => return Err(format!("cells[{i}]: name: is required")),
    };
    let f = Fields { i, name, map };
    const KNOWN: &[&str] = &[
        "name",
        "management_url",
        "amqp_url",
        "admin_secret_id",
        "web_stomp_url",
        "capacity",
        "state",
        "cluster",
        "pool",
    ];
    if let Some(unknown) = map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(f.at(unknown, "unknown field"));
    }
    let management_url = f
        .url("management_url", &["http", "https"], true)?
        .expect("required");
    let amqp_url = f
        .url("amqp_url", &["amqp", "amqps"], true)?
        .expect("required");
    if amqp_url.path().len() > 1 {
        return Err(f.at("amqp_url", "must name no vhost (each tenant has its own)"));
    }
    let web_stomp_url = f.url("web_stomp_url", &["ws", "wss"], false)?;
    let admin_secret_id = f
        .text("admin_secret_id")?
        .ok_or_else(|| f.at("admin_secret_id", "is required"))?;
    let capacity = f.capacity()?;
    let state = match f.text("state")? {
        None => CellState::Open,
        Some(s) => CellState::parse(&s).ok_or_else(|| {
            f.at(
                "state",
                format!("'{s}' is not one of open, draining, closed"),
            )
        })?,
    };
    let cluster = f.cluster()?;
    let pool = f.pool(capacity.vhosts)?;
    Ok(Cell {
        name: f.name,
        management_url,
        amqp_url,
        admin_secret_id,
        web_stomp_url,
        capacity,
        state,
        cluster,
        pool,
    })
}

/// One cell's fields, read with errors that name the file's cell and the field.
struct Fields<'a> {
    i: usize,
    name: String,
    map: &'a serde_json::Map<String, Value>,
}

impl Fields<'_> {
    fn at(&self, field: &str, problem: impl Into<String>) -> String {
        format!(
            "cell '{}' (cells[{}]): {field}: {}",
            self.name,
            self.i,
            problem.into()
        )
    }

    fn text(&self, field: &str) -> Result<Option<String>, String> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
            Some(_) => Err(self.at(field, "must be a non-empty string")),
        }
    }

    fn url(&self, field: &str, schemes: &[&str], required: bool) -> Result<Option<Url>, String> {
        let Some(raw) = self.text(field)? else {
            return if required {
                Err(self.at(field, "is required"))
            } else {
                Ok(None)
            };
        };
        let u =
            Url::parse(&raw).map_err(|e| self.at(field, format!("'{raw}' is not a URL: {e}")))?;
        if !schemes.contains(&u.scheme()) || u.host().is_none() {
            return Err(self.at(
                field,
                format!("'{raw}' must be a {} URL with a host", schemes.join("/")),
            ));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(self.at(
                field,
                "must carry no credentials (they come from the admin secret)",
            ));
        }
        Ok(Some(u))
    }

    fn capacity(&self) -> Result<Capacity, String> {
        let Some(Value::Object(c)) = self.map.get("capacity") else {
            return Err(self.at(
                "capacity",
                "is required: {vhosts: N, connections: N} (Amazon MQ: 1,500 vhosts on mq.m7g.large)",
            ));
        };
        if let Some(unknown) = c
            .keys()
            .find(|k| !["vhosts", "connections"].contains(&k.as_str()))
        {
            return Err(self.at(&format!("capacity.{unknown}"), "unknown field"));
        }
        let positive = |field: &str| -> Result<u64, String> {
            match c.get(field).and_then(Value::as_u64) {
                Some(n) if n > 0 => Ok(n),
                _ => Err(self.at(
                    &format!("capacity.{field}"),
                    "is required: a whole number above 0",
                )),
            }
        };
        let vhosts = positive("vhosts")?;
        let vhosts = u32::try_from(vhosts)
            .map_err(|_| self.at("capacity.vhosts", format!("{vhosts} is too large")))?;
        Ok(Capacity {
            vhosts: Some(vhosts),
            connections: Some(positive("connections")?),
        })
    }

    /// The cell's pool of vhosts made ahead, if it keeps one: `{size, queue_types}`, `size`
    /// ready vhosts of each queue type, within the cell's vhost capacity.
    fn pool(&self, vhosts: Option<u32>) -> Result<Option<Pool>, String> {
        let p = match self.map.get("pool") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(p)) => p,
            Some(_) => {
                return Err(self.at(
                    "pool",
                    "must be a mapping: {size: N, queue_types: [quorum]}",
                ));
            }
        };
        if let Some(unknown) = p
            .keys()
            .find(|k| !["size", "queue_types"].contains(&k.as_str()))
        {
            return Err(self.at(&format!("pool.{unknown}"), "unknown field"));
        }
        let size = p
            .get("size")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.at("pool.size", "is required: a whole number (0 keeps none)"))?;
        let types = p.get("queue_types").and_then(Value::as_array).ok_or_else(|| {
            self.at(
                "pool.queue_types",
                "is required: the default queue types of the vhosts made ahead, as your plans' default_queue_type (classic, quorum, stream)",
            )
        })?;
        let mut queue_types = Vec::new();
        for t in types {
            let parsed = t
                .as_str()
                .and_then(|s| serde_json::from_value::<QueueType>(Value::String(s.to_owned())).ok())
                .ok_or_else(|| {
                    self.at(
                        "pool.queue_types",
                        format!("{t} is not one of classic, quorum, stream"),
                    )
                })?;
            if !queue_types.contains(&parsed) {
                queue_types.push(parsed);
            }
        }
        if queue_types.is_empty() {
            return Err(self.at("pool.queue_types", "names no queue type"));
        }
        let kept = u64::from(size) * queue_types.len() as u64;
        if let Some(v) = vhosts
            && kept > u64::from(v)
        {
            return Err(self.at(
                "pool.size",
                format!(
                    "{size} of each of {} queue types is {kept} vhosts, more than capacity.vhosts ({v}) holds",
                    queue_types.len()
                ),
            ));
        }
        Ok(Some(Pool { size, queue_types }))
    }

    /// The cell's own cluster, if it declares one: a name, and its endpoint and CA together
    /// (or neither: DescribeCluster).
    fn cluster(&self) -> Result<Option<CellCluster>, String> {
        let c = match self.map.get("cluster") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(c)) => c,
            Some(_) => return Err(self.at("cluster", "must be a mapping")),
        };
        if let Some(unknown) = c
            .keys()
            .find(|k| !["name", "endpoint", "ca_data"].contains(&k.as_str()))
        {
            return Err(self.at(&format!("cluster.{unknown}"), "unknown field"));
        }
        let field = |f: &str| c.get(f).and_then(Value::as_str).map(str::to_owned);
        let name = field("name").ok_or_else(|| self.at("cluster.name", "is required"))?;
        let name = ClusterName::parse(&name).map_err(|e| self.at("cluster.name", e.to_string()))?;
        let endpoint = match field("endpoint") {
            None => None,
            Some(raw) => Some(
                Url::parse(&raw)
                    .ok()
                    .filter(|u| u.scheme() == "https" && u.host().is_some())
                    .ok_or_else(|| {
                        self.at("cluster.endpoint", format!("'{raw}' is not an https URL"))
                    })?,
            ),
        };
        let ca_data = field("ca_data");
        if let Some(ca) = &ca_data {
            crate::cells::cluster::ca_der(ca)
                .map_err(|e| self.at("cluster.ca_data", format!("(base64 of a PEM bundle) {e}")))?;
        }
        let access = match (endpoint, ca_data) {
            (Some(endpoint), Some(ca_data)) => Some(ClusterAccess { endpoint, ca_data }),
            (None, None) => None,
            _ => {
                return Err(self.at(
                    "cluster",
                    "endpoint and ca_data go together (or neither: DescribeCluster)",
                ));
            }
        };
        Ok(Some(CellCluster { name, access }))
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME
        && n.starts_with(|c: char| c.is_ascii_lowercase())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
cells:
  - name: eu-a
    management_url: https://b-1.mq.eu-west-1.amazonaws.com
    amqp_url: amqps://b-1.mq.eu-west-1.amazonaws.com:5671
    admin_secret_id: post-signup/cells/eu-a
    capacity: {vhosts: 1500, connections: 5000}
  - name: eu-b
    management_url: https://b-2.mq.eu-west-1.amazonaws.com
    amqp_url: amqps://b-2.mq.eu-west-1.amazonaws.com:5671
    admin_secret_id: post-signup/cells/eu-b
    web_stomp_url: wss://b-2.example.com/ws
    capacity: {vhosts: 1500, connections: 5000}
    state: draining
    cluster: {name: tenants-b}
"#;

    #[test]
    fn a_file_declares_cells_in_order() {
        let cells = Cells::parse("cells.yaml", TWO).unwrap();
        assert!(cells.declared);
        assert_eq!(cells.names(), ["eu-a", "eu-b"]);
        let b = cells.get("eu-b").unwrap();
        assert_eq!(b.state, CellState::Draining);
        assert_eq!(b.capacity.vhosts, Some(1500));
        assert_eq!(b.cluster.as_ref().unwrap().name.as_str(), "tenants-b");
        assert_eq!(cells.get("eu-a").unwrap().state, CellState::Open);
        assert_eq!(cells.first().name, "eu-a");
    }

    #[test]
    fn cells_naming_one_cluster_declare_it_alike() {
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD
            .encode("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let with = |first: &str| {
            TWO.replacen(
                "    capacity: {vhosts: 1500, connections: 5000}\n  - name: eu-b",
                &format!(
                    "    capacity: {{vhosts: 1500, connections: 5000}}\n    cluster: {first}\n  - name: eu-b"
                ),
                1,
            )
        };
        // Both by name (DescribeCluster): one cluster, two cells.
        let cells = Cells::parse("f", &with("{name: tenants-b}")).unwrap();
        assert_eq!(
            cells.get("eu-a").unwrap().cluster,
            cells.get("eu-b").unwrap().cluster
        );
        // One by name, one with an endpoint: which is it?
        let err = Cells::parse(
            "f",
            &with(&format!(
                "{{name: tenants-b, endpoint: 'https://k8s', ca_data: '{ca}'}}"
            )),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("cell 'eu-b' (cells[1]): cluster: 'tenants-b' is declared differently by cell 'eu-a'"),
            "{err}"
        );
    }

    #[test]
    fn a_pool_is_declared_per_cell_within_its_capacity() {
        let pooled = TWO.replacen(
            "capacity: {vhosts: 1500, connections: 5000}\n",
            "capacity: {vhosts: 1500, connections: 5000}\n    pool: {size: 200, queue_types: [quorum, classic, quorum]}\n",
            1,
        );
        let cells = Cells::parse("cells.yaml", &pooled).unwrap();
        let a = cells.get("eu-a").unwrap();
        assert_eq!(
            a.pool,
            Some(Pool {
                size: 200,
                queue_types: vec![QueueType::Quorum, QueueType::Classic]
            })
        );
        assert_eq!(a.pool_size(QueueType::Quorum), 200);
        assert_eq!(a.pool_size(QueueType::Stream), 0, "not kept");
        assert_eq!(cells.get("eu-b").unwrap().pool, None, "off unless asked");
        for (pool, problem) in [
            (
                "pool: {size: 1000, queue_types: [quorum, classic]}",
                "pool.size: 1000 of each of 2 queue types is 2000 vhosts, more than capacity.vhosts (1500) holds",
            ),
            ("pool: {size: 10}", "pool.queue_types: is required"),
            (
                "pool: {size: 10, queue_types: [lazy]}",
                "pool.queue_types: \"lazy\" is not one of classic, quorum, stream",
            ),
            (
                "pool: {size: -1, queue_types: [quorum]}",
                "pool.size: is required: a whole number",
            ),
            (
                "pool: {size: 10, queue_types: [quorum], warm: true}",
                "pool.warm: unknown field",
            ),
        ] {
            let bad = TWO.replacen(
                "capacity: {vhosts: 1500, connections: 5000}\n",
                &format!("capacity: {{vhosts: 1500, connections: 5000}}\n    {pool}\n"),
                1,
            );
            let e = Cells::parse("cells.yaml", &bad).unwrap_err().to_string();
            assert!(
                e.contains("cell 'eu-a' (cells[0]): ") && e.contains(problem),
                "{pool}: {e}"
            );
        }
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../../deploy/cells.yaml");
        let cells = Cells::parse("deploy/cells.yaml", text).unwrap();
        assert_eq!(cells.names(), ["eu-west-1-a", "eu-west-1-b"]);
    }

    #[test]
    fn the_single_broker_settings_are_one_implicit_cell() {
        let cells = Cells::implicit(
            Url::parse("https://mq:15671").unwrap(),
            Url::parse("amqps://mq:5671").unwrap(),
            "admin",
        );
        assert!(!cells.declared);
        assert_eq!(cells.names(), [DEFAULT_CELL]);
        assert_eq!(cells.first().capacity.vhosts, None);
    }

    #[test]
    fn every_error_names_the_cell_and_the_field() {
        let cases = [
            (
                "management_url: https://b-1.mq.eu-west-1.amazonaws.com",
                "management_url: ftp://x",
                "cell 'eu-a' (cells[0]): management_url",
            ),
            (
                "amqp_url: amqps://b-1.mq.eu-west-1.amazonaws.com:5671",
                "amqp_url: amqps://u:p@b-1:5671",
                "cell 'eu-a' (cells[0]): amqp_url: must carry no credentials",
            ),
            (
                "amqp_url: amqps://b-1.mq.eu-west-1.amazonaws.com:5671",
                "amqp_url: amqps://b-1:5671/vhost",
                "amqp_url: must name no vhost",
            ),
            (
                "capacity: {vhosts: 1500, connections: 5000}\n  - name: eu-b",
                "capacity: {vhosts: 0, connections: 5000}\n  - name: eu-b",
                "cell 'eu-a' (cells[0]): capacity.vhosts",
            ),
            (
                "admin_secret_id: post-signup/cells/eu-a",
                "admin_secret_id: ''",
                "cell 'eu-a' (cells[0]): admin_secret_id",
            ),
            (
                "state: draining",
                "state: full",
                "cell 'eu-b' (cells[1]): state: 'full'",
            ),
            (
                "name: eu-b",
                "name: eu-a",
                "cell 'eu-a' (cells[1]): name: declared twice",
            ),
            ("name: eu-b", "name: EU_B", "cells[1]: name: 'EU_B'"),
            (
                "cluster: {name: tenants-b}",
                "cluster: {name: tenants-b, endpoint: 'https://k8s'}",
                "cell 'eu-b' (cells[1]): cluster: endpoint and ca_data",
            ),
            (
                "cluster: {name: tenants-b}",
                "cluster: {name: 'tenants b'}",
                "cell 'eu-b' (cells[1]): cluster.name: invalid EKS cluster name",
            ),
            (
                "cluster: {name: tenants-b}",
                "cluster: {name: tenants-b, endpoint: 'https://k8s', ca_data: 'bm90IGEgcGVt'}",
                "cell 'eu-b' (cells[1]): cluster.ca_data: (base64 of a PEM bundle) holds no PEM CERTIFICATE",
            ),
            (
                "cluster: {name: tenants-b}",
                "clustr: {name: tenants-b}",
                "cell 'eu-b' (cells[1]): clustr: unknown field",
            ),
        ];
        for (from, to, want) in cases {
            assert!(TWO.contains(from), "{from}");
            let text = TWO.replacen(from, to, 1);
            let err = Cells::parse("cells.yaml", &text).unwrap_err().to_string();
            assert!(err.starts_with("cells file cells.yaml: "), "{err}");
            assert!(err.contains(want), "{to}: {err}");
        }
        for (text, want) in [
            ("cells: []", "declares no cell"),
            ("cell: []", "unknown top-level key 'cell'"),
            ("- a", "must be a mapping"),
            (
                "cells: [{name: a}]",
                "cell 'a' (cells[0]): management_url: is required",
            ),
        ] {
            let err = Cells::parse("f", text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
