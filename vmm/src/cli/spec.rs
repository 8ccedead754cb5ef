//! The container's process from the image's config and the flags: command (entrypoint + cmd),
//! environment, working directory, user; and the CPU limit.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use condo_vmm::images::ImageConfig;
use oci_spec::runtime::{LinuxCpuBuilder, Process, Spec, User};

/// CFS period for --cpus (Docker's).
const CPU_PERIOD_US: u64 = 100_000;

/// Flags that shape a process; shared by `run` and `exec`.
#[derive(Debug, Args, Default, Clone)]
pub struct ProcessFlags {
    /// Set an environment variable (repeatable): KEY=VALUE.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User: UID[:GID] (numeric).
    #[arg(short = 'u', long = "user", value_name = "UID[:GID]")]
    pub user: Option<String>,
}

/// The command: `command` when given (after the entrypoint), else entrypoint + cmd.
pub fn command_of(image: &ImageConfig, command: &[String]) -> Result<Vec<String>> {
    let mut args = image.entrypoint.clone();
    if command.is_empty() {
        args.extend(image.cmd.iter().cloned());
    } else {
        args.extend(command.iter().cloned());
    }
    if args.is_empty() {
        bail!("no command: the image has no entrypoint or cmd; give one after the image name");
    }
    Ok(args)
}

/// Parses `UID[:GID]`.
pub fn parse_user(text: &str) -> Result<(u32, u32)> {
    let bad = || anyhow!("invalid user {text:?}: expected UID[:GID] (numbers)");
    let (uid, gid) = match text.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (text, None),
    };
    let uid: u32 = uid.parse().map_err(|_| bad())?;
    let gid: u32 = match gid {
        Some(gid) => gid.parse().map_err(|_| bad())?,
        None => uid,
    };
    Ok((uid, gid))
}

fn check_env(entry: &str) -> Result<()> {
    match entry.split_once('=') {
        Some((key, _)) if !key.is_empty() && !key.contains('\0') => Ok(()),
        _ => bail!("invalid environment variable {entry:?}: expected KEY=VALUE"),
    }
}

/// Sets `entry` (KEY=VALUE) in `env`, replacing an earlier value of KEY.
fn set_env(env: &mut Vec<String>, entry: &str) {
    let key = entry.split_once('=').map_or(entry, |(k, _)| k);
    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
    env.push(entry.to_owned());
}

/// Applies the image's env, working dir and user, then the flags (which win).
pub fn apply_image_and_flags(
    process: &mut Process,
    image: &ImageConfig,
    flags: &ProcessFlags,
) -> Result<()> {
    let mut env = process.env().clone().unwrap_or_default();
    for entry in &image.env {
        check_env(entry).map_err(|e| anyhow!("image config: {e}"))?;
        set_env(&mut env, entry);
    }
    apply_flags(process, flags, env)?;
    if flags.workdir.is_none() && !image.working_dir.is_empty() {
        process.set_cwd(image.working_dir.clone().into());
    }
    if flags.user.is_none() && !image.user.is_empty() {
        let (uid, gid) = parse_user(&image.user)
            .map_err(|e| anyhow!("image config: {e} (user names are not supported yet)"))?;
        set_user(process, uid, gid);
    }
    Ok(())
}

/// Applies the flags to a process whose environment is `env`.
pub fn apply_flags(
    process: &mut Process,
    flags: &ProcessFlags,
    mut env: Vec<String>,
) -> Result<()> {
    for entry in &flags.env {
        check_env(entry)?;
        set_env(&mut env, entry);
    }
    process.set_env(Some(env));
    if let Some(dir) = &flags.workdir {
        if !dir.starts_with('/') {
            bail!("invalid --workdir {dir:?}: must be an absolute path");
        }
        process.set_cwd(dir.into());
    }
    if let Some(user) = &flags.user {
        let (uid, gid) = parse_user(user)?;
        set_user(process, uid, gid);
    }
    Ok(())
}

fn set_user(process: &mut Process, uid: u32, gid: u32) {
    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(gid);
    process.set_user(user);
}

/// --cpus X: a CFS quota of X periods.
pub fn set_cpus(spec: &mut Spec, cpus: f64) -> Result<()> {
    if !(cpus.is_finite() && (0.01..=1024.0).contains(&cpus)) {
        bail!("invalid --cpus {cpus}: must be within 0.01-1024");
    }
    let quota = (cpus * CPU_PERIOD_US as f64).round() as i64;
    let cpu = LinuxCpuBuilder::default()
        .quota(quota)
        .period(CPU_PERIOD_US)
        .build()
        .map_err(|e| anyhow!("cpu limit: {e}"))?;
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut resources = linux.resources().clone().unwrap_or_default();
    resources.set_cpu(Some(cpu));
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_is_entrypoint_then_cmd_or_args() {
        let image = ImageConfig {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo hi".into()],
            ..ImageConfig::default()
        };
        assert_eq!(
            command_of(&image, &[]).unwrap(),
            ["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(
            command_of(&image, &["true".into()]).unwrap(),
            ["/bin/sh", "-c", "true"]
        );
        assert!(command_of(&ImageConfig::default(), &[]).is_err());
    }

    #[test]
    fn flags_override_the_image() {
        let image = ImageConfig {
            env: vec!["A=1".into(), "B=2".into()],
            working_dir: "/srv".into(),
            user: "1000".into(),
            ..ImageConfig::default()
        };
        let flags = ProcessFlags {
            env: vec!["B=3".into()],
            workdir: None,
            user: Some("7:8".into()),
        };
        let mut process = Process::default();
        apply_image_and_flags(&mut process, &image, &flags).unwrap();
        let env = process.env().clone().unwrap();
        assert!(env.contains(&"A=1".to_string()) && env.contains(&"B=3".to_string()));
        assert!(!env.contains(&"B=2".to_string()));
        assert_eq!(process.cwd().to_str(), Some("/srv"));
        assert_eq!((process.user().uid(), process.user().gid()), (7, 8));
    }

    #[test]
    fn bad_flags_name_the_value() {
        let mut process = Process::default();
        for flags in [
            ProcessFlags {
                env: vec!["NOEQUALS".into()],
                ..ProcessFlags::default()
            },
            ProcessFlags {
                workdir: Some("rel".into()),
                ..ProcessFlags::default()
            },
            ProcessFlags {
                user: Some("root".into()),
                ..ProcessFlags::default()
            },
        ] {
            let err = apply_flags(&mut process, &flags, vec![])
                .unwrap_err()
                .to_string();
            assert!(err.contains("invalid"), "{err}");
        }
    }
}
