//! Published ports: `-p HOSTPORT:PORT[/tcp|udp]`.

use std::fmt;
use std::str::FromStr;

use super::NetError;

/// Transport protocol of a published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// nftables' name of it.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One published port: traffic to the host's `host_port` goes to `port` of a tenant address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortSpec {
    /// Port on the host's own addresses.
    pub host_port: u16,
    /// Port inside the tenant (guest or container).
    pub port: u16,
    /// Protocol.
    pub proto: Proto,
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.host_port, self.port, self.proto.name())
    }
}

impl FromStr for PortSpec {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| NetError::BadPort {
            spec: s.to_owned(),
            why: why.to_owned(),
        };
        let (ports, proto) = match s.split_once('/') {
            None => (s, Proto::Tcp),
            Some((ports, "tcp")) => (ports, Proto::Tcp),
            Some((ports, "udp")) => (ports, Proto::Udp),
            Some(_) => return Err(bad("the protocol must be tcp or udp")),
        };
        let (host, inner) = ports
            .split_once(':')
            .ok_or_else(|| bad("expected HOSTPORT:PORT[/tcp|udp]"))?;
        let parse = |text: &str| -> Result<u16, NetError> {
            match text.parse::<u16>() {
                Ok(0) | Err(_) => Err(bad("ports are numbers from 1 to 65535")),
                Ok(port) => Ok(port),
            }
        };
        Ok(PortSpec {
            host_port: parse(host)?,
            port: parse(inner)?,
            proto,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_port_specs() {
        let spec: PortSpec = "8080:80".parse().unwrap();
        assert_eq!(
            (spec.host_port, spec.port, spec.proto),
            (8080, 80, Proto::Tcp)
        );
        let spec: PortSpec = "53:5353/udp".parse().unwrap();
        assert_eq!(spec.proto, Proto::Udp);
        assert_eq!(spec.to_string(), "53:5353/udp");
        for bad in [
            "80",
            "0:80",
            "80:65536",
            "a:80",
            "80:80/sctp",
            "80:80/",
            ":80",
            "1:2:3",
        ] {
            let err = bad.parse::<PortSpec>().unwrap_err().to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }
}
