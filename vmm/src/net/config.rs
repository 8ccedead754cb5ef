//! A VM's network interface as configured: `--net tap=NAME[,mac=MAC]` or JSON
//! `{"tap": "NAME", "mac": "02:..."}` in VmConfig.net.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Mac, NetError};

/// One virtio-net interface of a VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Host tap device the interface is connected to.
    pub tap: String,
    /// The guest's MAC; a random locally administered one when absent.
    #[serde(default, with = "mac_text")]
    pub mac: Option<Mac>,
    /// A descriptor already attached to the tap: set by `condo vm run` when it opened the tap
    /// in the host's network namespace before entering the jail (never read from JSON).
    #[serde(skip)]
    pub tap_fd: Option<i32>,
}

impl NetConfig {
    /// Refuses a tap name the kernel would refuse.
    pub fn validate(&self) -> Result<(), NetError> {
        let name = &self.tap;
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0', ',']) {
            return Err(NetError::BadTapName(name.clone()));
        }
        Ok(())
    }
}

impl FromStr for NetConfig {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| NetError::BadNetSpec {
            spec: s.to_owned(),
            why: why.to_owned(),
        };
        let mut tap = None;
        let mut mac = None;
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("tap", name)) if tap.is_none() => tap = Some(name.to_owned()),
                Some(("mac", text)) if mac.is_none() => mac = Some(text.parse::<Mac>()?),
                Some(("tap" | "mac", _)) => return Err(bad("a key is given twice")),
                _ => return Err(bad("expected tap=NAME[,mac=MAC]")),
            }
        }
        let config = NetConfig {
            tap: tap.ok_or_else(|| bad("tap=NAME is required"))?,
            mac,
            tap_fd: None,
        };
        config.validate()?;
        Ok(config)
    }
}

mod mac_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::net::Mac;

    pub fn serialize<S: Serializer>(mac: &Option<Mac>, s: S) -> Result<S::Ok, S::Error> {
        match mac {
            Some(mac) => s.serialize_str(&mac.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mac>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| text.parse::<Mac>().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flag_and_json() {
        let c: NetConfig = "tap=condo3,mac=02:00:00:00:00:09".parse().unwrap();
        assert_eq!(c.tap, "condo3");
        assert_eq!(c.mac.unwrap().to_string(), "02:00:00:00:00:09");
        let c: NetConfig = "tap=t0".parse().unwrap();
        assert_eq!(c.mac, None);
        for bad in [
            "",
            "mac=02:00:00:00:00:01",
            "tap=a,tap=b",
            "tap=a,speed=10",
            "tap=waytoolongname01",
            "tap=a,mac=01:00:00:00:00:01",
        ] {
            let err = bad.parse::<NetConfig>().unwrap_err().to_string();
            assert!(!err.is_empty(), "{bad}");
        }
        let json: NetConfig =
            serde_json::from_str(r#"{"tap": "condo1", "mac": "02:aa:00:00:00:01"}"#).unwrap();
        assert_eq!(json.mac, Some(Mac([2, 0xaa, 0, 0, 0, 1])));
        let text = serde_json::to_string(&json).unwrap();
        assert_eq!(serde_json::from_str::<NetConfig>(&text).unwrap(), json);
        assert!(serde_json::from_str::<NetConfig>(r#"{"tap": "x", "tap_fd": 3}"#).is_err());
        assert!(serde_json::from_str::<NetConfig>(r#"{"tap": "x", "mac": "zz"}"#).is_err());
    }
}
