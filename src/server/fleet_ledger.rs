//! The fleet ledger's settings as the running sidecar needs them: the URL
//! read from where `[ledger]` says (the file, a variable, a mounted
//! Secret) and the pod's name. A URL that cannot be had is logged (without
//! the password) and the ledger stays local: serving goes on.

use crate::config::Env;
use crate::config::observability::{FleetSettings, FleetUrl};
use crate::ledger::{FleetConfig, FleetTarget};

/// The forwarder's settings; `None`, after an error log, when the URL
/// cannot be read or parsed.
pub(super) fn settings(
    settings: &FleetSettings,
    env: Env<'_>,
    source: &str,
) -> Option<FleetConfig> {
    match target(settings, env) {
        Ok(target) => {
            let mut config = FleetConfig::new(target, pod_name(env));
            config.spool_max_rows = settings.spool_max_rows;
            Some(config)
        }
        Err(error) => {
            tracing::error!(
                "ledger: no fleet ledger ({error}); rows stay in the local file only. Fix \
                 `[ledger] url`, `url_env` or `url_file` in {source}"
            );
            None
        }
    }
}

fn target(settings: &FleetSettings, env: Env<'_>) -> Result<FleetTarget, String> {
    let roots = crate::upstream::tls::env_roots(env).map_err(|error| error.to_string())?;
    match &settings.url {
        // Parsed when the config was read; the environment's CAs join now.
        FleetUrl::Inline(target) => Ok((**target).clone().with_roots(roots)),
        FleetUrl::Env(name) => {
            let url = env(name)
                .filter(|url| !url.trim().is_empty())
                .ok_or_else(|| format!("`url_env`: the variable {name} is not set"))?;
            FleetTarget::parse(&url, roots).map_err(|error| format!("the URL in {name} {error}"))
        }
        FleetUrl::File(path) => {
            let url = std::fs::read_to_string(path)
                .map_err(|error| format!("`url_file`: cannot read {}: {error}", path.display()))?;
            FleetTarget::parse(url.trim(), roots)
                .map_err(|error| format!("the URL in {} {error}", path.display()))
        }
    }
}

/// `POD_NAME` (the downward API), else `HOSTNAME` (a pod's name by
/// default), else the host's name.
fn pod_name(env: Env<'_>) -> String {
    env("POD_NAME")
        .filter(|name| !name.is_empty())
        .or_else(|| env("HOSTNAME").filter(|name| !name.is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
