//! `condo run IMAGE [CMD...]`: a container in a tenant (created on first use), from an image
//! of the store, with the runtime's strict defaults changed only as the flags ask.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use clap::Args;
use condo_agent::runtime::defaults::{default_spec, SpecOptions};
use condo_agent::runtime::OVERLAY_ANNOTATION;
use condo_protocol::{CreateContainer, MountImage, ProcessRef, StdioPipes};
use condo_vmm::tenant::{AttachedImage, Isolation, Tenant};

use super::containers::{
    self, agent, attach_and_wait, exit_code, now_unix, parse_size, Attach, ContainerRecord,
};
use super::image_ref::{self, ResolvedImage};
use super::spec;
use super::tenant_create::{self, TenantShape};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Tenant to run in; created (with this image attached) when it does not exist.
    #[arg(long, value_name = "NAME", default_value = containers::DEFAULT_TENANT)]
    tenant: String,
    /// Run in the background and print the container's name.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Remove the container when it exits (with -d, its agent removes it: `condo ps -a` no
    /// longer lists it, `condo wait` returns once it is gone).
    #[arg(long)]
    rm: bool,
    /// Container name (1-64 of [A-Za-z0-9_.-]); default a generated one.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Keep stdin open and forward ours to the container.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Give the container's process a pseudo-terminal (stdout and stderr both go to it) of
    /// our window's size, resized with it while attached; with -i our terminal is in raw mode
    /// while attached.
    #[arg(short = 't', long)]
    tty: bool,
    #[command(flatten)]
    process: spec::ProcessFlags,
    /// Memory limit (e.g. 64m); needs cgroup v2 controllers where the container runs.
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Limit on the number of processes.
    #[arg(long, value_name = "N")]
    pids_limit: Option<i64>,
    /// CPU limit in CPUs (e.g. 0.5).
    #[arg(long, value_name = "X")]
    cpus: Option<f64>,
    /// Read-only root filesystem (no writable overlay).
    #[arg(long)]
    read_only: bool,
    /// Remove a capability from the defaults (repeatable; ALL for every one).
    #[arg(long = "cap-drop", value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Add a capability to the defaults (repeatable).
    #[arg(long = "cap-add", value_name = "CAP")]
    cap_add: Vec<String>,
    /// Isolation of a tenant this run creates: vm (its own microVM) or process (this host);
    /// for an existing tenant it must match.
    #[arg(long, value_name = "vm|process")]
    isolation: Option<Isolation>,
    /// vCPUs of a tenant this run creates.
    #[arg(long, value_name = "N", default_value_t = 1)]
    tenant_vcpus: u8,
    /// Memory of a tenant this run creates.
    #[arg(long, value_name = "SIZE", default_value = "256m")]
    tenant_memory: String,
    /// Guest kernel of a tenant this run creates (default $CONDO_KERNEL).
    #[arg(long, value_name = "PATH")]
    kernel: Option<std::path::PathBuf>,
    /// The container's network: own (a network namespace of its own; in a tenant with a
    /// network, a routed veth to the VM and an address of the tenant's block, else loopback
    /// only) or vm (share the VM's eth0).
    #[arg(long, value_name = "own|vm", default_value = "own", value_parser = ["own", "vm"])]
    network: String,
    /// Publish the container's PORT on the host's HOSTPORT (repeatable; the tenant needs a
    /// network: a tenant this run creates gets one).
    #[arg(short = 'p', long = "publish", value_name = "HOSTPORT:PORT[/tcp|udp]")]
    publish: Vec<condo_vmm::net::PortSpec>,
    /// Image: name[:tag] or digest (prefix) in the store.
    image: String,
    /// Command and arguments (default: the image's entrypoint and cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(args: RunArgs) -> Result<i32> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => generated_name(),
    };
    condo_protocol::validate_id("container name", &name)?;
    let image = image_ref::resolve(&args.image)?;
    let mut spec = build_spec(&args, &image, &name)?;
    ensure_name_free(&name)?;
    let tenant = tenant_for(&args, &image)?;
    // A network namespace of its own in a tenant with a network: condo picks its address
    // (published ports go there) and the agent gives it a veth to the VM.
    let own_address = match args.network.as_str() {
        "own" => condo_vmm::tenant::net::assign_address(&tenant, &name)?,
        _ => None,
    };
    if let Some(addr) = own_address {
        let mut annotations: HashMap<String, String> =
            spec.annotations().clone().unwrap_or_default();
        annotations.insert(
            condo_vmm::tenant::net::ADDRESS_ANNOTATION.to_owned(),
            addr.to_string(),
        );
        spec.set_annotations(Some(annotations));
    }
    let created = create_and_start(&args, &tenant, &name, spec, &image, own_address);
    if created.is_err() {
        let _ = condo_vmm::tenant::net::release_address(&tenant, &name);
    }
    let client = created?;
    finish(&args, &tenant, &name, client)
}

/// Creates, starts and publishes the container; on failure nothing of it is left.
fn create_and_start(
    args: &RunArgs,
    tenant: &Tenant,
    name: &str,
    spec: oci_spec::runtime::Spec,
    image: &ResolvedImage,
    own_address: Option<std::net::Ipv4Addr>,
) -> Result<condo_protocol::Client<std::os::unix::net::UnixStream>> {
    let name = name.to_owned();
    let attached = attached_image(tenant, image, &args.image)?;
    let rootfs = mount_image(tenant, &attached)?;
    let record = ContainerRecord {
        name: name.clone(),
        tenant: tenant.name.clone(),
        image: args.image.clone(),
        image_digest: image.attached.digest.clone(),
        process: spec.process().clone().unwrap_or_default(),
        created_unix: now_unix(),
        auto_remove: args.rm && args.detach,
    };
    let mut client = agent(tenant)?;
    client
        .create(CreateContainer {
            container_id: name.clone(),
            spec: Box::new(spec),
            rootfs,
            stdio: StdioPipes {
                stdin: args.interactive,
                stdout: true,
                stderr: !args.tty,
            },
            auto_remove: args.rm && args.detach,
        })
        .map_err(|err| tenant.agent_error(err))
        .with_context(|| format!("cannot create container {name:?}"))?;
    record.save(tenant)?;
    if let Err(err) = client.start(&name) {
        let _ = client.delete(&name, true);
        ContainerRecord::remove(tenant, &name);
        return Err(tenant.agent_error(err)).context(format!("cannot start container {name:?}"));
    }
    if let Err(err) = condo_vmm::tenant::net::publish(tenant, &name, &args.publish, own_address) {
        let _ = client.delete(&name, true);
        ContainerRecord::remove(tenant, &name);
        return Err(err).context(format!("cannot publish the ports of container {name:?}"));
    }
    Ok(client)
}

/// Detached: prints the name; else waits for the container (and removes it with --rm).
fn finish(
    args: &RunArgs,
    tenant: &Tenant,
    name: &str,
    mut client: condo_protocol::Client<std::os::unix::net::UnixStream>,
) -> Result<i32> {
    let name = name.to_owned();
    if args.detach {
        println!("{name}");
        return Ok(0);
    }
    let init = ProcessRef::init(&name);
    let attach = Attach {
        stdin: args.interactive,
        terminal: args.tty,
    };
    let status = attach_and_wait(tenant, &init, attach)?;
    if args.rm {
        client
            .delete(&name, true)
            .map_err(|err| tenant.agent_error(err))?;
        ContainerRecord::remove(tenant, &name);
        condo_vmm::tenant::net::publish(tenant, &name, &[], None)?;
        condo_vmm::tenant::net::release_address(tenant, &name)?;
    }
    Ok(exit_code(&status))
}

fn generated_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("c-{:x}{:05x}", std::process::id(), nanos & 0xfffff)
}

/// Container names are unique on the host (the runtime's host-side device cgroups are per
/// name), so a name in any tenant is taken.
fn ensure_name_free(name: &str) -> Result<()> {
    for tenant in containers::tenants(None)? {
        if ContainerRecord::load(&tenant, name).is_some() {
            bail!(
                "container name {name:?} is already in use (tenant {:?}); remove it or pick another",
                tenant.name
            );
        }
    }
    Ok(())
}

/// The tenant to run in, created with the image when it does not exist yet.
fn tenant_for(args: &RunArgs, image: &ResolvedImage) -> Result<Tenant> {
    match Tenant::open(&args.tenant) {
        Ok(tenant) => {
            let config = tenant.config()?;
            if let Some(wanted) = args.isolation {
                if wanted != config.isolation {
                    bail!(
                        "tenant {:?} exists with --isolation {}, not {wanted}",
                        tenant.name,
                        config.isolation
                    );
                }
            }
            Ok(tenant)
        }
        Err(condo_vmm::tenant::TenantError::NotFound(_)) => {
            let shape = TenantShape {
                isolation: args.isolation,
                vcpus: args.tenant_vcpus,
                memory: args.tenant_memory.clone(),
                kernel: args.kernel.clone(),
                images: Vec::new(),
                net: !args.publish.is_empty(),
                dns: None,
                console_limit: None,
            };
            let mut config = shape.config(&args.tenant, None)?;
            if !config
                .images
                .iter()
                .any(|i| i.digest == image.attached.digest)
            {
                config.images.push(image.attached.clone());
            }
            tenant_create::create(&config)
        }
        Err(err) => Err(err.into()),
    }
}

/// The image as attached to the tenant: a host supervisor can mount any store image; a VM
/// only the disks it was booted with.
fn attached_image(
    tenant: &Tenant,
    image: &ResolvedImage,
    reference: &str,
) -> Result<(usize, AttachedImage)> {
    let mut config = tenant.config()?;
    if let Some(index) = config
        .images
        .iter()
        .position(|i| i.digest == image.attached.digest)
    {
        return Ok((index, config.images[index].clone()));
    }
    if config.isolation == Isolation::Vm {
        bail!(
            "image {reference:?} is not attached to tenant {:?} (its VM has disks for: {}); \
             attach it by recreating the tenant: condo tenant rm {} && condo tenant create {} \
             --image {reference}{}",
            tenant.name,
            config
                .images
                .iter()
                .map(|i| i.names.first().cloned().unwrap_or_else(|| i.digest.clone()))
                .collect::<Vec<_>>()
                .join(", "),
            tenant.name,
            tenant.name,
            config
                .images
                .iter()
                .filter_map(|i| i.names.first())
                .map(|n| format!(" --image {n}"))
                .collect::<String>()
        );
    }
    config.images.push(image.attached.clone());
    tenant.write_config(&config)?;
    Ok((config.images.len() - 1, image.attached.clone()))
}

/// Mounts the image in the tenant's agent; returns the rootfs path there.
fn mount_image(tenant: &Tenant, (index, image): &(usize, AttachedImage)) -> Result<String> {
    let config = tenant.config()?;
    let source = match config.isolation {
        Isolation::Process => image.fs_path.display().to_string(),
        Isolation::Vm => {
            let letter = u8::try_from(*index)
                .ok()
                .filter(|i| *i < 26)
                .map(|i| char::from(b'a' + i))
                .with_context(|| format!("image disk index {index} is beyond /dev/vdz"))?;
            format!("/dev/vd{letter}")
        }
    };
    let mut client = agent(tenant)?;
    client
        .mount_image(MountImage {
            image_id: image.mount_id(),
            source,
            fs_type: image.fs_type.clone(),
        })
        .map_err(|err| tenant.agent_error(err))
        .with_context(|| {
            format!(
                "cannot mount image {} in tenant {:?}",
                image.digest, tenant.name
            )
        })
}

fn build_spec(
    args: &RunArgs,
    image: &ResolvedImage,
    name: &str,
) -> Result<oci_spec::runtime::Spec> {
    let memory_limit = args
        .memory
        .as_deref()
        .map(parse_size)
        .transpose()?
        .map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX));
    if let Some(pids) = args.pids_limit {
        if pids < 1 {
            bail!("invalid --pids-limit {pids}: must be at least 1");
        }
    }
    let command = spec::command_of(&image.config, &args.command)?;
    let options = SpecOptions {
        args: command,
        hostname: Some(name.to_owned()),
        read_only: args.read_only,
        cap_add: args.cap_add.clone(),
        cap_drop: args
            .cap_drop
            .iter()
            .filter(|c| !c.eq_ignore_ascii_case("ALL"))
            .cloned()
            .collect(),
        cap_drop_all: args.cap_drop.iter().any(|c| c.eq_ignore_ascii_case("ALL")),
        memory_limit,
        pids_limit: args.pids_limit,
        host_network: args.network == "vm",
        ..SpecOptions::default()
    };
    let mut spec = default_spec(&options)?;
    let mut process = spec.process().clone().unwrap_or_default();
    spec::apply_image_and_flags(&mut process, &image.config, &args.process)?;
    if args.tty {
        super::terminal::request_terminal(&mut process);
    }
    spec.set_process(Some(process));
    if let Some(cpus) = args.cpus {
        spec::set_cpus(&mut spec, cpus)?;
    }
    if !args.read_only {
        let mut annotations: HashMap<String, String> =
            spec.annotations().clone().unwrap_or_default();
        annotations.insert(OVERLAY_ANNOTATION.to_owned(), "state".to_owned());
        spec.set_annotations(Some(annotations));
    }
    Ok(spec)
}
