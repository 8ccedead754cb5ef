//! Applies the plan to a host: links and routes with `ip`, rules with `nft -f -`.
//!
//! Why the commands and not a netlink crate: `nft -f -` applies a whole change as ONE atomic
//! transaction in the syntax operators read and debug with; libnftnl bindings for Rust are
//! thin and unmaintained, and rtnetlink pulls in an async runtime for four link operations.
//! iproute2 and nftables are on every host condo supports (.ci/run installs them).
//! Every command can run inside a named network namespace (`ip netns exec`): tests use that to
//! play "the host" without touching the real one.

use std::io::Write;
use std::process::{Command, Stdio};

use super::addr::{TenantAddrs, LINK_PREFIX};
use super::nft::{self, Published};
use super::ports::Proto;
use super::NetError;

/// Where rules and links go: the host itself, or a named network namespace (tests).
#[derive(Clone, Debug, Default)]
pub struct NetHost {
    netns: Option<String>,
}

impl NetHost {
    /// The host's own network namespace.
    pub fn host() -> NetHost {
        NetHost { netns: None }
    }

    /// A named namespace (`ip netns add NAME` made it).
    pub fn in_netns(name: &str) -> NetHost {
        NetHost {
            netns: Some(name.to_owned()),
        }
    }

    fn command(&self, program: &str) -> Command {
        match &self.netns {
            None => Command::new(program),
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, program]);
                cmd
            }
        }
    }

    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, NetError> {
        let mut cmd = self.command(program);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = format!("{program} {}", args.join(" "));
        let spawn_err = |source| NetError::Spawn {
            command: shown.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).map_err(spawn_err)?;
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        if !out.status.success() {
            return Err(NetError::Command {
                command: shown,
                input: stdin.map(str::to_owned).unwrap_or_default(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn nft(&self, script: &str) -> Result<(), NetError> {
        self.run("nft", &["-f", "-"], Some(script)).map(drop)
    }

    /// condo's table as JSON, or Null when it does not exist.
    fn table_json(&self) -> Result<serde_json::Value, NetError> {
        let listed = self.run("nft", &["-j", "list", "ruleset", "inet"], None)?;
        let json: serde_json::Value =
            serde_json::from_str(&listed).map_err(|e| NetError::Parse {
                what: "nft -j list ruleset inet",
                message: e.to_string(),
            })?;
        let ours = json
            .get("nftables")
            .and_then(|v| v.as_array())
            .map(|items| {
                items
                    .iter()
                    .filter(|item| {
                        item.as_object()
                            .and_then(|o| o.values().next())
                            .and_then(|v| v.get("table").or_else(|| v.get("name")))
                            .and_then(|t| t.as_str())
                            == Some("condo")
                    })
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        Ok(serde_json::json!({ "nftables": ours }))
    }

    fn link_exists(&self, name: &str) -> Result<bool, NetError> {
        let listed = self.run("ip", &["-o", "link", "show"], None)?;
        Ok(listed.lines().any(|line| {
            line.split(": ")
                .nth(1)
                .map(|n| n.split('@').next() == Some(name))
                .unwrap_or(false)
        }))
    }

    /// Connects tenant `a` whose tap (or, in tests, veth) exists: address and route on the
    /// link, forwarding, NAT and isolation rules. Idempotent; on failure removes what it made.
    pub fn add_tenant(&self, a: &TenantAddrs) -> Result<(), NetError> {
        if !self.link_exists(&a.tap)? {
            return Err(NetError::NoSuchLink(a.tap.clone()));
        }
        let made = self.configure_tenant(a);
        if made.is_err() {
            let _ = self.remove_tenant_rules(a);
        }
        made
    }

    fn configure_tenant(&self, a: &TenantAddrs) -> Result<(), NetError> {
        self.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"], None)?;
        // No IPv6 on tenant links: no link-local chatter, nothing to filter.
        let v6 = format!("net.ipv6.conf.{}.disable_ipv6=1", a.tap);
        let _ = self.run("sysctl", &["-qw", &v6], None);
        let host = format!("{}/{LINK_PREFIX}", a.host);
        self.run("ip", &["addr", "replace", &host, "dev", &a.tap], None)?;
        self.run("ip", &["link", "set", &a.tap, "up"], None)?;
        let guest = a.guest.to_string();
        let block = a.block_cidr();
        let route = [
            "route", "replace", &block, "via", &guest, "dev", &a.tap, "onlink",
        ];
        self.run("ip", &route, None)?;
        let mut script = nft::base();
        script.push_str(&nft::add_tenant(a));
        self.nft(&script)
    }

    /// Removes everything `add_tenant` and `set_ports` made for `a`, and its link; removes
    /// condo's table when no tenant is left. Succeeds when there is nothing to remove.
    pub fn remove_tenant(&self, a: &TenantAddrs) -> Result<(), NetError> {
        self.remove_tenant_rules(a)?;
        if self.link_exists(&a.tap)? {
            self.run("ip", &["link", "del", &a.tap], None)?;
        }
        Ok(())
    }

    fn remove_tenant_rules(&self, a: &TenantAddrs) -> Result<(), NetError> {
        let json = self.table_json()?;
        let owned = owned_ports(&json, a);
        let mut script = nft::base();
        script.push_str(&nft::remove_tenant(a, &owned));
        self.nft(&script)?;
        if nft::tenant_count(&self.table_json()?) == 0 {
            self.nft(&format!(
                "add table {t}\ndelete table {t}\n",
                t = nft::TABLE
            ))?;
        }
        Ok(())
    }

    /// Makes `ports` the tenant's published ports (replacing the ones it had). A host port
    /// another tenant publishes already is refused, naming it.
    pub fn set_ports(&self, a: &TenantAddrs, ports: &[Published]) -> Result<(), NetError> {
        let json = self.table_json()?;
        let mine = nft::ports_chain(a);
        for p in ports {
            if !a.contains(p.target) {
                return Err(NetError::TargetOutsideTenant {
                    target: p.target,
                    block: a.block_cidr(),
                });
            }
            let taken = nft::port_owners(&json)
                .into_iter()
                .find(|(proto, port, chain)| {
                    *proto == p.spec.proto && *port == p.spec.host_port && *chain != mine
                });
            if let Some((_, _, chain)) = taken {
                return Err(NetError::PortTaken {
                    spec: p.spec.to_string(),
                    owner: chain,
                });
            }
        }
        let mut sorted = ports.to_vec();
        sorted.sort();
        if let Some(dup) = sorted.windows(2).find(|w| {
            w[0].spec.proto == w[1].spec.proto && w[0].spec.host_port == w[1].spec.host_port
        }) {
            return Err(NetError::PortTaken {
                spec: dup[1].spec.to_string(),
                owner: format!("this tenant ({})", dup[0].spec),
            });
        }
        let owned = owned_ports(&json, a);
        self.nft(&nft::set_ports(a, &owned, ports))
    }

    /// Runs `f` on a thread that entered this host's network namespace (tests, tap creation).
    pub fn run_inside<T, F>(&self, f: F) -> Result<T, NetError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let Some(ns) = &self.netns else {
            return Ok(f());
        };
        let path = std::path::Path::new("/run/netns").join(ns);
        let file = std::fs::File::open(&path).map_err(|source| NetError::Spawn {
            command: format!("open {}", path.display()),
            source,
        })?;
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| NetError::Spawn {
                        command: format!("setns {}", path.display()),
                        source: e.into(),
                    })
                    .map(|()| f())
            });
            worker.join().unwrap_or_else(|_| {
                Err(NetError::Spawn {
                    command: format!("thread in netns {ns}"),
                    source: std::io::Error::other("panicked"),
                })
            })
        })
    }
}

fn owned_ports(json: &serde_json::Value, a: &TenantAddrs) -> Vec<(Proto, u16)> {
    let mine = nft::ports_chain(a);
    nft::port_owners(json)
        .into_iter()
        .filter(|(_, _, chain)| *chain == mine)
        .map(|(proto, port, _)| (proto, port))
        .collect()
}
