//! `condo tenant create`: the run directory, the supervisor, the wait for the agent's ready.
//! A create that fails removes everything it made and shows the console's tail.

use std::time::Duration;

use super::{
    make_run_dir, remove, spawn_process_supervisor, Isolation, Result, Tenant, TenantConfig,
};

/// Creates and starts a tenant; returns once its agent answers a ping.
pub fn create(config: &TenantConfig, ready_timeout: Duration) -> Result<Tenant> {
    if config.net.is_some() && config.isolation != Isolation::Vm {
        return Err(super::TenantError::Invalid(
            "--net needs --isolation vm (a process tenant shares the host's network)".into(),
        ));
    }
    if config.console_limit.is_some() && config.isolation != Isolation::Vm {
        return Err(super::TenantError::Invalid(
            "--console-limit needs --isolation vm (a process tenant has no guest console)".into(),
        ));
    }
    let tenant = make_run_dir(config)?;
    let started = network_up(&tenant)
        .and_then(|()| match config.isolation {
            Isolation::Process => spawn_process_supervisor(&tenant).map(drop),
            Isolation::Vm => super::spawn_vm::spawn_vm(&tenant).map(drop),
        })
        .and_then(|()| tenant.wait_ready(ready_timeout));
    match started {
        Ok(()) => Ok(tenant),
        Err(err) => {
            // The error already holds the console's tail; nothing of the tenant may stay.
            if let Err(cleanup) = remove(&tenant, true) {
                eprintln!(
                    "condo: warning: cleaning up the failed tenant {:?}: {cleanup}",
                    tenant.name
                );
            }
            Err(err)
        }
    }
}

/// Gives the tenant its network index (recorded in config.json) and makes its tap and rules.
fn network_up(tenant: &Tenant) -> Result<()> {
    let mut config = tenant.config()?;
    let Some(net) = config.net.as_mut() else {
        return Ok(());
    };
    net.index = super::net::allocate_index(&tenant.name)?;
    let net = *net;
    tenant.write_config(&config)?;
    super::net::up(&net).map(drop)
}
