//! Sizes as operators write them: `512`, `64k`, `256m`, `1g` (powers of 1024, an optional
//! trailing `b`). Shared by `condo vm run`/`condo-vmm` and the container CLI.

/// A size that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The unit is not k, m or g.
    #[error("invalid size {0:?}: the unit must be k, m or g")]
    Unit(String),
    /// No number before the unit.
    #[error("invalid size {0:?}: expected a number with k, m or g")]
    Number(String),
    /// More than fits in 64 bits.
    #[error("invalid size {0:?}: too large")]
    TooLarge(String),
    /// Zero.
    #[error("invalid size {0:?}: must be more than 0")]
    Zero(String),
}

/// Parses a size in bytes: a number, optionally followed by k, m or g (powers of 1024) and an
/// optional `b`.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (digits, unit) = match lower.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => lower.split_at(at),
        None => (lower, ""),
    };
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return Err(SizeError::Unit(text.to_owned())),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| SizeError::Number(text.to_owned()))?;
    let bytes = number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| SizeError::TooLarge(text.to_owned()))?;
    if bytes == 0 {
        return Err(SizeError::Zero(text.to_owned()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_powers_of_1024() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("2kb").unwrap(), 2048);
    }

    #[test]
    fn bad_sizes_are_named_in_the_error() {
        for bad in ["", "m", "12x", "0", "-1", "99999999999999g"] {
            let err = parse_size(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
