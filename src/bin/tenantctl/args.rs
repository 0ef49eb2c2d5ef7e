//! The command line: every command and flag (clap), and the parsers of values clap lacks.

use clap::{Parser, Subcommand, ValueEnum};
use post_signup::tenant::record::Phase;

#[derive(Parser)]
#[command(
    name = "tenantctl",
    version,
    about = "Operate post-signup tenants and sign EKS tokens"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum CellAction {
    Open,
    Drain,
    Close,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Print an ExecCredential with a freshly signed EKS token, like `aws eks get-token`.
    Token {
        #[arg(long)]
        cluster_name: String,
        /// Defaults to the standard AWS region chain (AWS_REGION, profile).
        #[arg(long)]
        region: Option<String>,
        /// Sign as of this RFC 3339 time instead of now (reproducible output).
        #[arg(long)]
        at: Option<String>,
    },
    /// Print a ConfirmSignUp event for SUB (the shipped fixture with that sub), for scripts,
    /// `sam local invoke` and `provision --event -`.
    Event {
        #[arg(long)]
        sub: String,
    },
    /// Check a backend Deployment template as the function's cold start does (for
    /// `BACKEND_TEMPLATE=FILE make package`); prints what the tenants' Deployments will run.
    CheckTemplate {
        /// The template file (an apps/v1 Deployment).
        file: std::path::PathBuf,
    },
    /// Check a cells file as the functions' cold start does (for `CELLS=FILE make package`);
    /// prints each cell (no secret). With --admin-secret-id, also refuses a cell whose admin
    /// secret the template's roles cannot read (neither that id nor named under `ID/`).
    CheckCells {
        file: std::path::PathBuf,
        #[arg(long)]
        admin_secret_id: Option<String>,
    },
    /// Check a plans file as the functions' cold start does (for `PLANS=FILE make package`);
    /// prints its plans and the default.
    CheckPlans { file: std::path::PathBuf },
    /// Provision a tenant: `--event FILE|-` runs the trigger exactly (same budget, same hand-off,
    /// same answer on stdout); `--sub SUB` provisions one tenant directly and prints the report.
    Provision {
        #[arg(long, conflicts_with = "sub", required_unless_present = "sub")]
        event: Option<String>,
        #[arg(long)]
        sub: Option<String>,
        /// For benchmarks of simultaneous cold sign-ups (with --event FILE): after the cold
        /// start, say `tenantctl: ready` on stderr and wait for a line on stdin, then invoke,
        /// the budget counting from then less the cold start's duration (as if the cold start
        /// ran just before, on a CPU of its own, as each Lambda container's does). Prints
        /// `init_ms` and `invocation_ms` on stderr.
        #[arg(long, requires = "event", conflicts_with = "sub", hide = true)]
        barrier: bool,
    },
    /// Show what exists for a tenant (keys, never values).
    Status {
        #[arg(long)]
        sub: String,
    },
    /// Offboard a tenant: record it offboarded (a tombstone: nothing brings it back but
    /// `restore`), then revoke its access and remove its parts (needs the operator identity).
    Deprovision {
        #[arg(long)]
        sub: String,
        /// Keep the vhost and its messages; remove only the user, its access and the backend.
        #[arg(long)]
        retain_data: bool,
        /// Days Secrets Manager keeps the tenant secret recoverable (7-30).
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(i64).range(7..=30))]
        recovery_days: i64,
        /// Delete the tenant secret at once, without a recovery window.
        #[arg(long, conflicts_with = "recovery_days")]
        no_recovery: bool,
    },
    /// Lift an offboarding on purpose: the tenant is provisioned again, with a new password.
    Restore {
        #[arg(long)]
        sub: String,
    },
    /// Every recorded tenant with its state and plan, from the registry (paginated).
    List {
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        #[arg(long)]
        plan: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Per cell (broker): tenants, vhosts and connections against capacity, state, broker
    /// version, from bulk listings (CELLS_PATH names the cells; without it, the one broker).
    Cells {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Change a cell's state in the registry: `open` (takes new tenants), `drain` (takes none;
    /// its tenants stay), `close` (takes none, expected empty).
    Cell {
        #[arg(value_enum)]
        action: CellAction,
        /// A cell of the cells file.
        name: String,
    },
    /// Top up each cell's pool of vhosts made ahead (`pool:` in the cells file) to its size, and
    /// finish or remove what an earlier refill left (the worker and the reconciler do this
    /// too); prints what each cell's refill did.
    PoolRefill {
        /// Only this cell.
        #[arg(long)]
        cell: Option<String>,
        /// At most this many vhosts made per cell.
        #[arg(long, default_value_t = 500)]
        max: usize,
        /// Finish reservations left unfinished at least this old (seconds).
        #[arg(long, default_value_t = 120)]
        min_age: u64,
    },
    /// Record every tenant of this installation that exists but has no record, from what its
    /// objects carry (once: recorded tenants are never adopted again).
    Adopt {
        #[arg(long)]
        dry_run: bool,
    },
    /// Move a tenant to another plan (limits, replicas, resources).
    Plan {
        #[arg(long)]
        sub: String,
        /// A plan of deploy/plans.yaml (or PLANS_PATH).
        name: String,
    },
    /// Scale the tenant's backend to 0 and refuse its AMQP connections (open ones are closed).
    Suspend {
        #[arg(long)]
        sub: String,
    },
    /// Undo `suspend`: the plan's replicas and connection limit come back.
    Resume {
        #[arg(long)]
        sub: String,
    },
    /// Give the tenant a new password everywhere, roll its backend, then close the connections
    /// still using the old password. Run again, it finishes a rotation left half-done.
    Rotate {
        #[arg(long)]
        sub: String,
        /// Seconds to wait for the backend to roll before closing old connections.
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Move a tenant to another cell: its vhost's definitions and messages (shovels), then its
    /// credentials (the backend rolls), then the source is removed. Resumable: run it again
    /// after a failure. Refused for a suspended or offboarded tenant. `--abort` abandons a move
    /// that has not switched yet: what reached the target comes back, the target's vhost and
    /// seat are given back.
    Move {
        #[arg(long)]
        sub: String,
        /// The target cell (of the cells file).
        #[arg(long, required_unless_present = "abort", conflicts_with = "abort")]
        to: Option<String>,
        /// Abandon the move in progress (before its switch) instead.
        #[arg(long)]
        abort: bool,
        /// Seconds to wait for the backend to roll, and for each pass of the shovels.
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Provision every tenant on the hand-off queue; exits when the queue is empty.
    Drain,
    /// Compare the user pool with what exists: provision missing or incomplete tenants, report
    /// (and with --prune remove) orphans.
    Reconcile {
        /// Report only; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also offboard recorded tenants whose user no longer exists (guarded: each user is
        /// checked again, records younger than --min-age are kept, and a run that would prune
        /// more than --max-fraction of the tenants is refused whole).
        #[arg(long, conflicts_with = "dry_run")]
        prune: bool,
        /// Minimum age of a record before it may be pruned (e.g. 24h, 30m, 0s).
        #[arg(long, default_value = "24h", value_parser = parse_age)]
        min_age: std::time::Duration,
        /// Largest fraction of this installation's tenants one run may prune (0-1).
        #[arg(long, default_value_t = 0.1, value_parser = parse_fraction)]
        max_fraction: f64,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StateArg {
    Active,
    Suspended,
    Offboarded,
}

impl From<StateArg> for Phase {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Active => Phase::Active,
            StateArg::Suspended => Phase::Suspended,
            StateArg::Offboarded => Phase::Offboarded,
        }
    }
}

pub(crate) fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not an age such as 24h, 30m or 0s"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("'{s}': the unit is one of s, m, h, d")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

pub(crate) fn parse_fraction(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or_else(|| format!("'{s}' is not a fraction between 0 and 1"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use std::time::Duration;

    const SUB: &str = "4f8e2b1a-0c3d-4e5f-8a9b-0c1d2e3f4a5b";

    fn parse(args: &[&str]) -> Command {
        let argv = std::iter::once("tenantctl").chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.command,
            Err(e) => panic!("{args:?} should parse: {e}"),
        }
    }

    /// What clap says of a command line it refuses; it exits 2, as tenantctl's bad input does.
    fn refused(args: &[&str]) -> ErrorKind {
        let argv = std::iter::once("tenantctl").chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(_) => panic!("{args:?} should be refused"),
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
                e.kind()
            }
        }
    }

    #[test]
    fn the_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn token_event_and_the_checks() {
        assert!(matches!(
            parse(&["token", "--cluster-name", "c", "--region", "eu-west-1", "--at", "2026-12-02T00:00:00Z"]),
            Command::Token { cluster_name, region: Some(r), at: Some(_) } if cluster_name == "c" && r == "eu-west-1"
        ));
        assert!(matches!(
            parse(&["token", "--cluster-name", "c"]),
            Command::Token {
                region: None,
                at: None,
                ..
            }
        ));
        assert_eq!(refused(&["token"]), ErrorKind::MissingRequiredArgument);
        assert!(matches!(parse(&["event", "--sub", SUB]), Command::Event { sub } if sub == SUB));
        assert!(matches!(
            parse(&["check-plans", "p.yaml"]),
            Command::CheckPlans { file } if file.as_os_str() == "p.yaml"
        ));
        assert!(matches!(
            parse(&["check-template", "t.yaml"]),
            Command::CheckTemplate { file } if file.as_os_str() == "t.yaml"
        ));
        assert!(matches!(
            parse(&["check-cells", "cells.yaml", "--admin-secret-id", "admin"]),
            Command::CheckCells { admin_secret_id: Some(id), .. } if id == "admin"
        ));
        assert_eq!(
            refused(&["check-cells"]),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn provision_takes_an_event_or_a_sub_never_both() {
        assert!(matches!(
            parse(&["provision", "--event", "-"]),
            Command::Provision { event: Some(e), sub: None, barrier: false } if e == "-"
        ));
        assert!(matches!(
            parse(&["provision", "--event", "e.json", "--barrier"]),
            Command::Provision { barrier: true, .. }
        ));
        assert!(matches!(
            parse(&["provision", "--sub", SUB]),
            Command::Provision {
                event: None,
                sub: Some(_),
                ..
            }
        ));
        assert_eq!(refused(&["provision"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            refused(&["provision", "--event", "-", "--sub", SUB]),
            ErrorKind::ArgumentConflict
        );
        // Before: accepted, and the barrier silently ignored.
        assert_eq!(
            refused(&["provision", "--sub", SUB, "--barrier"]),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn one_tenant_commands_need_a_sub() {
        for command in [
            "status",
            "deprovision",
            "restore",
            "suspend",
            "resume",
            "rotate",
        ] {
            assert_eq!(
                refused(&[command]),
                ErrorKind::MissingRequiredArgument,
                "{command}"
            );
        }
        assert!(matches!(
            parse(&["status", "--sub", SUB]),
            Command::Status { .. }
        ));
        assert!(matches!(
            parse(&["restore", "--sub", SUB]),
            Command::Restore { .. }
        ));
        assert!(matches!(
            parse(&["suspend", "--sub", SUB]),
            Command::Suspend { .. }
        ));
        assert!(matches!(
            parse(&["resume", "--sub", SUB]),
            Command::Resume { .. }
        ));
        assert!(matches!(
            parse(&["rotate", "--sub", SUB]),
            Command::Rotate { wait: 120, .. }
        ));
        assert!(matches!(
            parse(&["rotate", "--sub", SUB, "--wait", "5"]),
            Command::Rotate { wait: 5, .. }
        ));
        assert_eq!(
            refused(&["rotate", "--sub", SUB, "--wait", "soon"]),
            ErrorKind::ValueValidation
        );
        assert!(matches!(
            parse(&["plan", "--sub", SUB, "business"]),
            Command::Plan { name, .. } if name == "business"
        ));
        assert_eq!(
            refused(&["plan", "--sub", SUB]),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn deprovision_keeps_the_secret_recoverable_7_to_30_days_unless_told() {
        assert!(matches!(
            parse(&["deprovision", "--sub", SUB]),
            Command::Deprovision {
                retain_data: false,
                recovery_days: 7,
                no_recovery: false,
                ..
            }
        ));
        assert!(matches!(
            parse(&[
                "deprovision",
                "--sub",
                SUB,
                "--retain-data",
                "--recovery-days",
                "30"
            ]),
            Command::Deprovision {
                retain_data: true,
                recovery_days: 30,
                ..
            }
        ));
        assert!(matches!(
            parse(&["deprovision", "--sub", SUB, "--no-recovery"]),
            Command::Deprovision {
                no_recovery: true,
                ..
            }
        ));
        assert_eq!(
            refused(&["deprovision", "--sub", SUB, "--recovery-days", "6"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            refused(&["deprovision", "--sub", SUB, "--recovery-days", "31"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            refused(&[
                "deprovision",
                "--sub",
                SUB,
                "--no-recovery",
                "--recovery-days",
                "9"
            ]),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn list_cells_cell_and_adopt() {
        assert!(matches!(
            parse(&["list"]),
            Command::List {
                state: None,
                plan: None,
                output: Output::Text
            }
        ));
        assert!(matches!(
            parse(&[
                "list",
                "--state",
                "offboarded",
                "--plan",
                "free",
                "--output",
                "json"
            ]),
            Command::List {
                state: Some(StateArg::Offboarded),
                plan: Some(_),
                output: Output::Json
            }
        ));
        assert_eq!(
            refused(&["list", "--state", "gone"]),
            ErrorKind::InvalidValue
        );
        assert_eq!(Phase::from(StateArg::Suspended), Phase::Suspended);
        assert!(matches!(
            parse(&["cells", "--output", "json"]),
            Command::Cells {
                output: Output::Json
            }
        ));
        assert!(matches!(
            parse(&["cell", "drain", "a"]),
            Command::Cell { action: CellAction::Drain, name } if name == "a"
        ));
        assert!(matches!(
            parse(&["cell", "open", "a"]),
            Command::Cell {
                action: CellAction::Open,
                ..
            }
        ));
        assert!(matches!(
            parse(&["cell", "close", "a"]),
            Command::Cell {
                action: CellAction::Close,
                ..
            }
        ));
        assert_eq!(refused(&["cell", "delete", "a"]), ErrorKind::InvalidValue);
        assert_eq!(
            refused(&["cell", "drain"]),
            ErrorKind::MissingRequiredArgument
        );
        assert!(matches!(
            parse(&["adopt"]),
            Command::Adopt { dry_run: false }
        ));
        assert!(matches!(
            parse(&["adopt", "--dry-run"]),
            Command::Adopt { dry_run: true }
        ));
        assert!(matches!(parse(&["drain"]), Command::Drain));
    }

    #[test]
    fn move_names_its_target() {
        assert!(matches!(
            parse(&["move", "--sub", SUB, "--to", "b"]),
            Command::Move { to: Some(to), wait: 120, abort: false, .. } if to == "b"
        ));
        assert!(matches!(
            parse(&["move", "--sub", SUB, "--abort"]),
            Command::Move {
                to: None,
                abort: true,
                ..
            }
        ));
        assert_eq!(
            refused(&["move", "--sub", SUB, "--to", "b", "--abort"]),
            ErrorKind::ArgumentConflict
        );
        assert!(matches!(
            parse(&["move", "--sub", SUB, "--to", "b", "--wait", "30"]),
            Command::Move { wait: 30, .. }
        ));
        assert_eq!(
            refused(&["move", "--sub", SUB]),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn reconcile_guards_its_prune() {
        assert!(matches!(
            parse(&["reconcile"]),
            Command::Reconcile { dry_run: false, prune: false, min_age, max_fraction, output: Output::Text }
                if min_age == Duration::from_secs(86_400) && max_fraction == 0.1
        ));
        assert!(matches!(
            parse(&["reconcile", "--prune", "--min-age", "30m", "--max-fraction", "0.5", "--output", "json"]),
            Command::Reconcile { prune: true, min_age, max_fraction, output: Output::Json, .. }
                if min_age == Duration::from_secs(1800) && max_fraction == 0.5
        ));
        assert_eq!(
            refused(&["reconcile", "--dry-run", "--prune"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            refused(&["reconcile", "--min-age", "5x"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            refused(&["reconcile", "--max-fraction", "2"]),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn ages_and_fractions() {
        assert_eq!(parse_age("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_age("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_age("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_age("h").unwrap_err().contains("is not an age"));
        assert!(parse_age("5w").unwrap_err().contains("the unit is one of"));
        assert_eq!(parse_fraction("0"), Ok(0.0));
        assert_eq!(parse_fraction("1"), Ok(1.0));
        assert!(parse_fraction("-0.1").is_err());
        assert!(parse_fraction("half").is_err());
    }

    #[test]
    fn an_unknown_command_or_flag_is_refused() {
        assert_eq!(refused(&["provison"]), ErrorKind::InvalidSubcommand);
        assert_eq!(
            refused(&["status", "--sub", SUB, "--verbose"]),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            refused(&[]),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
    }
}
