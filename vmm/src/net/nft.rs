//! condo's nftables ruleset as text for `nft -f -` (one atomic transaction per change).
//!
//! One table, `inet condo`. Base chains only dispatch, through sets and verdict maps whose
//! elements belong to one tenant each; a tenant's own rules live in its chains `t<index>_in`
//! (anti-spoofing, no tenant-to-tenant traffic) and `t<index>_ports` (published ports). Adding
//! a tenant adds elements and chains; removing it deletes exactly those. Removal uses
//! "add, then delete" inside one transaction, so it succeeds whether or not the objects exist.
//!
//! ```text
//! prerouting (raw, before conntrack)  iifname vmap @ingress       -> t<i>_in
//! input                               iifname @taps               -> tenant_to_host
//! nat prerouting / output             fib daddr type local, dport vmap @ports_tcp|udp -> t<i>_ports
//! nat postrouting                     ip saddr @tenant_nets, daddr outside them: masquerade
//! ```

use std::fmt::Write;
use std::net::Ipv4Addr;

use super::addr::TenantAddrs;
use super::ports::{PortSpec, Proto};

/// Family and name of condo's table.
pub const TABLE: &str = "inet condo";

/// The base objects and dispatch rules; idempotent (base chains are flushed and refilled).
pub fn base() -> String {
    let t = TABLE;
    let mut s = String::new();
    let _ = writeln!(s, "add table {t}");
    let _ = writeln!(
        s,
        "add set {t} tenant_nets {{ type ipv4_addr; flags interval; }}"
    );
    let _ = writeln!(s, "add set {t} taps {{ type ifname; }}");
    let _ = writeln!(s, "add map {t} ingress {{ type ifname : verdict; }}");
    for proto in [Proto::Tcp, Proto::Udp] {
        let p = proto.name();
        let _ = writeln!(
            s,
            "add map {t} ports_{p} {{ type inet_service : verdict; }}"
        );
    }
    let chains = [
        (
            "prerouting",
            "type filter hook prerouting priority -300; policy accept;",
        ),
        ("input", "type filter hook input priority 0; policy accept;"),
        ("tenant_to_host", ""),
        (
            "nat_prerouting",
            "type nat hook prerouting priority -100; policy accept;",
        ),
        (
            "nat_output",
            "type nat hook output priority -100; policy accept;",
        ),
        (
            "nat_postrouting",
            "type nat hook postrouting priority 100; policy accept;",
        ),
    ];
    for (name, spec) in chains {
        if spec.is_empty() {
            let _ = writeln!(s, "add chain {t} {name}");
        } else {
            let _ = writeln!(s, "add chain {t} {name} {{ {spec} }}");
        }
        let _ = writeln!(s, "flush chain {t} {name}");
    }
    let rules = [
        "prerouting iifname vmap @ingress",
        "input iifname @taps jump tenant_to_host",
        // Tenants reach the host only with replies and pings: no host service is theirs.
        "tenant_to_host ct state established,related accept",
        "tenant_to_host icmp type echo-request accept",
        "tenant_to_host counter drop",
        "nat_prerouting fib daddr type local tcp dport vmap @ports_tcp",
        "nat_prerouting fib daddr type local udp dport vmap @ports_udp",
        // From the host itself: its own addresses, not loopback (127/8 cannot be routed out).
        "nat_output ip daddr != 127.0.0.0/8 fib daddr type local tcp dport vmap @ports_tcp",
        "nat_output ip daddr != 127.0.0.0/8 fib daddr type local udp dport vmap @ports_udp",
        "nat_postrouting ip saddr @tenant_nets ip daddr != @tenant_nets masquerade",
    ];
    for rule in rules {
        let _ = writeln!(s, "add rule {t} {rule}");
    }
    s
}

fn in_chain(a: &TenantAddrs) -> String {
    format!("t{}_in", a.index)
}

/// Name of the chain holding a tenant's published ports.
pub fn ports_chain(a: &TenantAddrs) -> String {
    format!("t{}_ports", a.index)
}

/// A tenant's chains and elements (after [`base`]); idempotent.
pub fn add_tenant(a: &TenantAddrs) -> String {
    let t = TABLE;
    let (chain, ports, tap, block) = (in_chain(a), ports_chain(a), &a.tap, a.block_cidr());
    let mut s = String::new();
    let _ = writeln!(s, "add chain {t} {chain}");
    let _ = writeln!(s, "flush chain {t} {chain}");
    // Only the VM's own MAC and the tenant's own addresses may come out of its tap; IPv6 is
    // not planned, so none of it passes; nothing for another tenant's block passes either.
    let _ = writeln!(
        s,
        "add rule {t} {chain} ether saddr != {} counter drop",
        a.guest_mac
    );
    let _ = writeln!(s, "add rule {t} {chain} meta nfproto != ipv4 counter drop");
    let _ = writeln!(s, "add rule {t} {chain} ip saddr != {block} counter drop");
    let _ = writeln!(
        s,
        "add rule {t} {chain} ip daddr != {block} ip daddr @tenant_nets counter drop"
    );
    let _ = writeln!(s, "add chain {t} {ports}");
    let _ = writeln!(s, "add element {t} ingress {{ \"{tap}\" : jump {chain} }}");
    let _ = writeln!(s, "add element {t} taps {{ \"{tap}\" }}");
    let _ = writeln!(s, "add element {t} tenant_nets {{ {block} }}");
    s
}

/// Removes a tenant's chains and elements, present or not. `owned_ports` are the map keys that
/// jump to its ports chain (read from the live ruleset).
pub fn remove_tenant(a: &TenantAddrs, owned_ports: &[(Proto, u16)]) -> String {
    let t = TABLE;
    let (chain, ports, tap, block) = (in_chain(a), ports_chain(a), &a.tap, a.block_cidr());
    let mut s = String::new();
    let _ = writeln!(s, "add chain {t} {chain}");
    let _ = writeln!(s, "add chain {t} {ports}");
    let _ = writeln!(s, "add element {t} ingress {{ \"{tap}\" : jump {chain} }}");
    let _ = writeln!(s, "delete element {t} ingress {{ \"{tap}\" }}");
    let _ = writeln!(s, "add element {t} taps {{ \"{tap}\" }}");
    let _ = writeln!(s, "delete element {t} taps {{ \"{tap}\" }}");
    let _ = writeln!(s, "add element {t} tenant_nets {{ {block} }}");
    let _ = writeln!(s, "delete element {t} tenant_nets {{ {block} }}");
    for (proto, port) in owned_ports {
        let _ = writeln!(s, "delete element {t} ports_{} {{ {port} }}", proto.name());
    }
    for name in [&chain, &ports] {
        let _ = writeln!(s, "flush chain {t} {name}");
        let _ = writeln!(s, "delete chain {t} {name}");
    }
    s
}

/// A port published to one address of a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Published {
    /// The mapping.
    pub spec: PortSpec,
    /// Where it goes: the guest's or a container's address.
    pub target: Ipv4Addr,
}

/// Replaces the tenant's published ports by `ports`. `owned_ports` are the keys it has now.
pub fn set_ports(a: &TenantAddrs, owned_ports: &[(Proto, u16)], ports: &[Published]) -> String {
    let t = TABLE;
    let chain = ports_chain(a);
    let mut s = String::new();
    let _ = writeln!(s, "add chain {t} {chain}");
    let _ = writeln!(s, "flush chain {t} {chain}");
    for (proto, port) in owned_ports {
        let _ = writeln!(s, "delete element {t} ports_{} {{ {port} }}", proto.name());
    }
    for p in ports {
        let proto = p.spec.proto.name();
        let _ = writeln!(
            s,
            "add rule {t} {chain} {proto} dport {} dnat ip to {}:{}",
            p.spec.host_port, p.target, p.spec.port
        );
        let _ = writeln!(
            s,
            "add element {t} ports_{proto} {{ {} : jump {chain} }}",
            p.spec.host_port
        );
    }
    s
}

/// The port maps' elements as (protocol, host port, chain jumped to), from `nft -j list table`.
pub fn port_owners(json: &serde_json::Value) -> Vec<(Proto, u16, String)> {
    let mut owners = Vec::new();
    let Some(items) = json.get("nftables").and_then(|v| v.as_array()) else {
        return owners;
    };
    for item in items {
        let Some(map) = item.get("map") else { continue };
        let proto = match map.get("name").and_then(|n| n.as_str()) {
            Some("ports_tcp") => Proto::Tcp,
            Some("ports_udp") => Proto::Udp,
            _ => continue,
        };
        let elems = map.get("elem").and_then(|e| e.as_array());
        for elem in elems.into_iter().flatten() {
            let port = elem.get(0).and_then(|p| p.as_u64());
            let target = elem
                .get(1)
                .and_then(|v| v.get("jump"))
                .and_then(|j| j.get("target"))
                .and_then(|t| t.as_str());
            if let (Some(port), Some(target)) = (port.and_then(|p| u16::try_from(p).ok()), target) {
                owners.push((proto, port, target.to_owned()));
            }
        }
    }
    owners
}

/// How many tenants the live ruleset holds (elements of the `taps` set).
pub fn tenant_count(json: &serde_json::Value) -> usize {
    let items = json.get("nftables").and_then(|v| v.as_array());
    items
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("set"))
        .filter(|set| set.get("name").and_then(|n| n.as_str()) == Some("taps"))
        .filter_map(|set| set.get("elem").and_then(|e| e.as_array()).map(Vec::len))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_rules_name_its_mac_block_and_tap() {
        let a = TenantAddrs::for_index(7).unwrap();
        let text = add_tenant(&a);
        assert!(
            text.contains("ether saddr != 02:c0:d0:00:00:07 counter drop"),
            "{text}"
        );
        assert!(
            text.contains("ip saddr != 10.231.0.112/28 counter drop"),
            "{text}"
        );
        assert!(text.contains("\"condo7\" : jump t7_in"), "{text}");
    }

    #[test]
    fn removal_deletes_what_adding_made() {
        let a = TenantAddrs::for_index(3).unwrap();
        let removal = remove_tenant(&a, &[(Proto::Tcp, 8080)]);
        for line in add_tenant(&a)
            .lines()
            .filter(|l| l.starts_with("add element"))
        {
            let object = line.trim_start_matches("add element ");
            let key = object.split(" : ").next().unwrap_or(object);
            let key = key.trim_end_matches(" }");
            assert!(
                removal.contains(&format!("delete element {key}")),
                "{key}\n{removal}"
            );
        }
        assert!(removal.contains("delete element inet condo ports_tcp { 8080 }"));
        assert!(removal.contains("delete chain inet condo t3_in"));
        assert!(removal.contains("delete chain inet condo t3_ports"));
    }

    #[test]
    fn ports_become_dnat_rules_and_map_elements() {
        let a = TenantAddrs::for_index(0).unwrap();
        let spec: PortSpec = "5353:53/udp".parse().unwrap();
        let text = set_ports(
            &a,
            &[(Proto::Tcp, 80)],
            &[Published {
                spec,
                target: a.guest,
            }],
        );
        assert!(
            text.contains("delete element inet condo ports_tcp { 80 }"),
            "{text}"
        );
        assert!(
            text.contains("add rule inet condo t0_ports udp dport 5353 dnat ip to 10.231.0.2:53")
        );
        assert!(text.contains("add element inet condo ports_udp { 5353 : jump t0_ports }"));
    }

    #[test]
    fn reads_port_owners_and_tenant_count_from_json() {
        let json: serde_json::Value = serde_json::from_str(
            r#"{"nftables": [{"metainfo": {}},
              {"set": {"name": "taps", "elem": ["condo1", "condo2"]}},
              {"map": {"name": "ports_tcp", "elem": [[8080, {"jump": {"target": "t7_ports"}}]]}},
              {"map": {"name": "ports_udp"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            port_owners(&json),
            vec![(Proto::Tcp, 8080, "t7_ports".to_owned())]
        );
        assert_eq!(tenant_count(&json), 2);
        assert_eq!(tenant_count(&serde_json::Value::Null), 0);
    }
}
