//! What a cell's declared capacity may be on the broker it names: Amazon MQ's limits, which
//! its management API does not expose. A warning, not a refusal — the operator may have raised
//! `vhost_max` — naming the limit and how to check or raise it.

use crate::cells::Cell;

/// Amazon MQ for RabbitMQ 4.x on `mq.m7g.large` and larger: `vhost_max` is 50 unless raised by
/// a configuration revision (up to 1,500) and a reboot.
pub const AMAZON_MQ_4_DEFAULT_VHOST_MAX: u32 = 50;
/// Amazon MQ for RabbitMQ 3.x on `mq.m7g.large` and larger: 1,500 vhosts, not raisable.
pub const AMAZON_MQ_3_VHOSTS: u32 = 1_500;
/// Connections per broker on `mq.m7g.large`.
pub const AMAZON_MQ_LARGE_CONNECTIONS: u64 = 5_000;

/// Whether the management URL is an Amazon MQ broker's (`b-….mq.<region>.amazonaws.com`).
pub fn is_amazon_mq(cell: &Cell) -> bool {
    cell.management_url
        .host_str()
        .is_some_and(|h| h.contains(".mq.") && h.ends_with(".amazonaws.com"))
}

/// Warnings for `cell`, given its broker's RabbitMQ version when known (`tenantctl cells`),
/// or none (`tenantctl check-cells`, offline: then the 4.x default is assumed, the stricter).
pub fn capacity_warnings(cell: &Cell, broker_version: Option<&str>) -> Vec<String> {
    if !is_amazon_mq(cell) {
        return Vec::new();
    }
    let major = broker_version
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    let mut out = Vec::new();
    let vhosts = cell.capacity.vhosts.unwrap_or(0);
    match major {
        Some(m) if m < 4 => {
            if vhosts > AMAZON_MQ_3_VHOSTS {
                out.push(format!(
                    "cell '{}': capacity.vhosts {vhosts} is more than an Amazon MQ RabbitMQ {m}.x broker allows ({AMAZON_MQ_3_VHOSTS} on mq.m7g.large and larger, 10 on medium; 3.x brokers cannot raise it): declare at most {AMAZON_MQ_3_VHOSTS}",
                    cell.name
                ));
            }
        }
        _ => {
            if vhosts > AMAZON_MQ_4_DEFAULT_VHOST_MAX {
                let which = match major {
                    Some(m) => format!("this broker runs RabbitMQ {m}.x"),
                    None => "if this broker runs RabbitMQ 4.x".to_owned(),
                };
                out.push(format!(
                    "cell '{}': capacity.vhosts {vhosts} is more than Amazon MQ's default vhost_max of {AMAZON_MQ_4_DEFAULT_VHOST_MAX} ({which}; mq.m7g.large and larger): the broker refuses new vhosts past it. Raise vhost_max (up to 1,500) with a configuration revision and a reboot, or declare at most {AMAZON_MQ_4_DEFAULT_VHOST_MAX}",
                    cell.name
                ));
            }
        }
    }
    if cell
        .capacity
        .connections
        .is_some_and(|c| c > AMAZON_MQ_LARGE_CONNECTIONS)
    {
        out.push(format!(
            "cell '{}': capacity.connections {} is more than the {AMAZON_MQ_LARGE_CONNECTIONS} connections of an Amazon MQ mq.m7g.large broker: check the instance type's quota",
            cell.name,
            cell.capacity.connections.unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::Cells;

    fn cell(url: &str, vhosts: u32, connections: u64) -> Cell {
        let file = format!(
            "cells:\n  - name: c\n    management_url: {url}\n    amqp_url: amqps://b-1.mq.eu-west-1.amazonaws.com:5671\n    admin_secret_id: a\n    capacity: {{vhosts: {vhosts}, connections: {connections}}}\n"
        );
        Cells::parse("test", &file).unwrap().all()[0].clone()
    }

    const MQ: &str = "https://b-1.mq.eu-west-1.amazonaws.com";

    #[test]
    fn amazon_mq_4_past_its_default_vhost_max_is_warned_with_how_to_raise_it() {
        let w = capacity_warnings(&cell(MQ, 1500, 5000), Some("4.2.1"));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("vhost_max of 50") && w[0].contains("reboot"),
            "{w:?}"
        );
        assert!(capacity_warnings(&cell(MQ, 50, 5000), Some("4.2.1")).is_empty());
        // Offline (no version): the stricter 4.x default, said as an "if".
        let w = capacity_warnings(&cell(MQ, 200, 5000), None);
        assert!(w[0].contains("if this broker runs RabbitMQ 4.x"), "{w:?}");
    }

    #[test]
    fn amazon_mq_3_past_1500_and_connections_past_the_large_quota_are_warned() {
        assert!(capacity_warnings(&cell(MQ, 1500, 5000), Some("3.13.7")).is_empty());
        let w = capacity_warnings(&cell(MQ, 2000, 8000), Some("3.13.7"));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("cannot raise"), "{w:?}");
        assert!(w[1].contains("5000 connections"), "{w:?}");
    }

    #[test]
    fn a_self_hosted_broker_is_not_judged_by_amazon_mqs_limits() {
        assert!(
            capacity_warnings(&cell("http://rabbit:15672", 100_000, 1_000_000), None).is_empty()
        );
    }
}
