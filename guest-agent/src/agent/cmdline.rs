//! The agent's settings from the kernel command line (`condo.port=N`, `condo.hostname=NAME`,
//! `condo.unix=PATH`, `condo.disk=DEV:PATH`, `condo.net=ADDR/PREFIX,GW[,DNS]`), for when it
//! runs as PID 1 and has no other way to be told.

use std::path::PathBuf;

use condo_protocol::DEFAULT_VSOCK_PORT;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    pub vsock_port: u32,
    pub hostname: String,
    /// Serve a Unix socket at this path instead of vsock (for guests without a vsock device).
    pub unix_socket: Option<PathBuf>,
    /// eth0's settings (`condo.net=ADDR/PREFIX,GW[,DNS]`), when the VM has a network.
    pub net: Option<super::net::NetBoot>,
    /// The tenant's address block (`condo.net.block=ADDR/PREFIX`): containers' addresses.
    pub net_block: Option<(std::net::Ipv4Addr, u8)>,
    /// Read-only image disks to mount at boot (`condo.disk=/dev/vda:/images/busybox`), each
    /// made writable by a tmpfs overlay: a container's rootfs.
    pub disks: Vec<DiskMount>,
}

/// One `condo.disk=DEV:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskMount {
    pub device: PathBuf,
    pub target: PathBuf,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            vsock_port: DEFAULT_VSOCK_PORT,
            hostname: "condo".into(),
            unix_socket: None,
            net: None,
            net_block: None,
            disks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel command line: {param}={value:?}: {reason}")]
pub struct CmdlineError {
    pub param: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// Parses the kernel command line. Bad values are returned as errors beside a config that keeps
/// the default for them, so that PID 1 can log them and still come up.
pub fn parse(cmdline: &str) -> (BootConfig, Vec<CmdlineError>) {
    let mut config = BootConfig::default();
    let mut errors = Vec::new();
    for word in cmdline.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        match key {
            "condo.port" => match value.parse::<u32>() {
                Ok(port) if port > 0 && port != u32::MAX => config.vsock_port = port,
                _ => errors.push(CmdlineError {
                    param: "condo.port",
                    value: value.into(),
                    reason: "not a port number in 1..4294967294",
                }),
            },
            "condo.hostname" => {
                if valid_hostname(value) {
                    config.hostname = value.into();
                } else {
                    errors.push(CmdlineError {
                        param: "condo.hostname",
                        value: value.into(),
                        reason: "not a hostname (1-64 of letters, digits, '-', '.')",
                    });
                }
            }
            "condo.net" => match value.parse() {
                Ok(net) => config.net = Some(net),
                Err(reason) => errors.push(CmdlineError {
                    param: "condo.net",
                    value: value.into(),
                    reason,
                }),
            },
            "condo.net.block" => match super::container_net::parse_block(value) {
                Some(block) => config.net_block = Some(block),
                None => errors.push(CmdlineError {
                    param: "condo.net.block",
                    value: value.into(),
                    reason: "not an aligned IPv4 block from /24 to /29",
                }),
            },
            "condo.unix" => {
                if value.starts_with('/') {
                    config.unix_socket = Some(PathBuf::from(value));
                } else {
                    errors.push(CmdlineError {
                        param: "condo.unix",
                        value: value.into(),
                        reason: "not an absolute path",
                    });
                }
            }
            "condo.disk" => match parse_disk(value) {
                Some(disk) => config.disks.push(disk),
                None => errors.push(CmdlineError {
                    param: "condo.disk",
                    value: value.into(),
                    reason: "not /dev/NAME:/ABSOLUTE/PATH",
                }),
            },
            _ => {}
        }
    }
    (config, errors)
}

fn parse_disk(value: &str) -> Option<DiskMount> {
    let (device, target) = value.split_once(':')?;
    let name = device.strip_prefix("/dev/")?;
    let plain = |p: &str| !p.split('/').any(|c| c == ".." || c == ".");
    if name.is_empty()
        || !plain(name)
        || !target.starts_with('/')
        || !plain(target)
        || target == "/"
    {
        return None;
    }
    Some(DiskMount {
        device: PathBuf::from(device),
        target: PathBuf::from(target),
    })
}

fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_condo_parameters() {
        let (config, errors) = parse("console=ttyS0 reboot=k quiet");
        assert_eq!(config, BootConfig::default());
        assert!(errors.is_empty());
    }

    #[test]
    fn reads_port_hostname_and_socket() {
        let (config, errors) =
            parse("console=ttyS0 condo.port=5000 condo.hostname=acme-1 condo.unix=/run/a.sock\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(config.vsock_port, 5000);
        assert_eq!(config.hostname, "acme-1");
        assert_eq!(config.unix_socket, Some(PathBuf::from("/run/a.sock")));
        assert_eq!(config.net, None);
        let (config, errors) = parse("condo.net=10.231.0.2/30,10.231.0.1,1.1.1.1 condo.net=bad");
        assert_eq!(config.net.map(|n| n.prefix), Some(30));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("condo.net=\"bad\""),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn bad_values_keep_defaults_and_are_reported() {
        let (config, errors) =
            parse("condo.port=0 condo.port=http condo.hostname=a/b condo.unix=rel");
        assert_eq!(config, BootConfig::default());
        let params: Vec<_> = errors.iter().map(|e| e.param).collect();
        assert_eq!(
            params,
            ["condo.port", "condo.port", "condo.hostname", "condo.unix"]
        );
        assert!(errors[1].to_string().contains("\"http\""));
    }

    #[test]
    fn reads_disks_and_refuses_bad_ones() {
        let (config, errors) = parse(
            "condo.disk=/dev/vda:/images/busybox condo.disk=/dev/vdb:/images/b \
             condo.disk=vda:/x condo.disk=/dev/vda:rel condo.disk=/dev/../sda:/x \
             condo.disk=/dev/vda condo.disk=/dev/vda:/ condo.disk=/dev/vda:/a/../b",
        );
        assert_eq!(
            config.disks,
            [
                DiskMount {
                    device: "/dev/vda".into(),
                    target: "/images/busybox".into()
                },
                DiskMount {
                    device: "/dev/vdb".into(),
                    target: "/images/b".into()
                }
            ]
        );
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert!(errors.iter().all(|e| e.param == "condo.disk"));
    }
}
