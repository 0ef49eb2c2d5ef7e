//! What every command shares: the settings, the app with its cold start done, printing, and
//! reading a `--sub` or an event.

use std::io::Read as _;

use post_signup::lambda::app::App;
use post_signup::lambda::settings::Settings;
use post_signup::tenant::TenantId;
use serde::Serialize;
use serde_json::Value;

use crate::error::CliError;

pub(crate) fn settings() -> Result<Settings, CliError> {
    Settings::from_env().map_err(CliError::input)
}

/// The app with every cold-start call done (tenantctl wants to fail loudly, not hand off).
pub(crate) async fn init() -> Result<App, CliError> {
    let settings = settings()?;
    let aws =
        post_signup::outside::aws::load_config(settings.connect_timeout, settings.budget).await;
    App::init_with(settings, &aws)
        .await
        .map_err(|e| CliError::outside(e.context("cold start failed")))
}

pub(crate) fn print(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON serialises")
    );
}

pub(crate) fn parse_sub(sub: &str) -> Result<TenantId, CliError> {
    TenantId::parse(sub).map_err(|e| CliError::input(format!("--sub {e}")))
}

pub(crate) fn read_event(path: &str) -> Result<Value, CliError> {
    let text = if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::input(format!("reading stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::input(format!("reading event file '{path}': {e}")))?
    };
    serde_json::from_str(&text)
        .map_err(|e| CliError::input(format!("event '{path}' is not JSON: {e}")))
}
