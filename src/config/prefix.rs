//! Parses the prefix text written in a config or list file.
//!
//! Stricter than std's parser on lengths and clearer about what is wrong:
//! every rejection explains how to write the value instead.

use std::net::{IpAddr, Ipv4Addr};

use ip_network::{IpNetwork, Ipv4Network, Ipv6Network};

/// A prefix as written and the network it is used as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedPrefix {
    pub network: IpNetwork,
    pub adjustment: Option<Adjustment>,
}

/// Change that turned the written prefix into `network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjustment {
    /// Host bits were set and have been cleared.
    HostBitsCleared,
    /// An IPv4-mapped IPv6 prefix was rewritten as the IPv4 prefix, because
    /// lookups unwrap mapped addresses to IPv4 before matching.
    MappedToIpv4,
    /// An IPv4-mapped prefix with host bits set, such as
    /// `::ffff:10.20.0.0/96`, rewritten as IPv4 with them cleared: here
    /// `0.0.0.0/0`.
    MappedHostBitsCleared,
}

/// Parses `text` such as `192.168.1.0/24` or `fd00::/8`. Returns the reason
/// for a rejection, phrased so it can follow the value in a message.
pub fn parse_prefix(text: &str) -> Result<ParsedPrefix, String> {
    match parse_ipv4_fast(text) {
        Some(parsed) => Ok(parsed),
        None => parse_prefix_general(text),
    }
}

/// Parses a plain IPv4 prefix `a.b.c.d/n` without allocating, for the bulk
/// of a large list file. Returns `None` for anything else, valid or not, so
/// that [`parse_prefix_general`] decides it and explains any rejection. Like
/// std's parser, it rejects octets with leading zeros.
fn parse_ipv4_fast(text: &str) -> Option<ParsedPrefix> {
    let bytes = text.as_bytes();
    let mut address = 0u32;
    let mut at = 0;
    for separator in [b'.', b'.', b'.', b'/'] {
        let (octet, end) = parse_decimal(bytes, at)?;
        if octet > 255 || bytes.get(end) != Some(&separator) {
            return None;
        }
        address = address << 8 | octet;
        at = end + 1;
    }
    let (length, end) = parse_decimal(bytes, at)?;
    if end != bytes.len() || length > 32 {
        return None;
    }
    let mask = u32::MAX.checked_shl(32 - length).unwrap_or(0);
    let length = u8::try_from(length).ok()?;
    let network = Ipv4Network::new(Ipv4Addr::from(address & mask), length).ok()?;
    Some(ParsedPrefix {
        network: IpNetwork::V4(network),
        adjustment: (address & !mask != 0).then_some(Adjustment::HostBitsCleared),
    })
}

/// Reads one to three decimal digits at `start`, rejecting a leading zero.
/// Returns the value and the index after the last digit.
#[inline]
fn parse_decimal(bytes: &[u8], start: usize) -> Option<(u32, usize)> {
    let mut value = 0;
    let mut end = start;
    while end < bytes.len() && end - start < 3 {
        let digit = bytes[end].wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        value = value * 10 + u32::from(digit);
        end += 1;
    }
    if end == start || (end - start > 1 && bytes[start] == b'0') {
        return None;
    }
    Some((value, end))
}

/// Parses any prefix that [`parse_prefix`] accepts, and explains rejections.
fn parse_prefix_general(text: &str) -> Result<ParsedPrefix, String> {
    if text.contains('%') {
        return Err("a prefix cannot carry a zone (%name); remove it".to_owned());
    }
    let Some((address_text, length_text)) = text.split_once('/') else {
        return Err(missing_length_reason(text));
    };
    let address = parse_address(address_text)?;
    let max_length = if address.is_ipv4() { 32 } else { 128 };
    let length = parse_length(length_text, max_length)?;

    let network = match address {
        IpAddr::V4(v4) => IpNetwork::V4(truncate_v4(v4, length)),
        IpAddr::V6(v6) => IpNetwork::V6(
            Ipv6Network::new_truncate(v6, length).expect("length was checked against 128"),
        ),
    };
    let host_bits_set = network.network_address() != address;

    // A prefix inside ::ffff:0:0/96 could never match, because mapped
    // addresses are looked up as IPv4; use the IPv4 prefix it means.
    if let IpAddr::V6(v6) = address {
        if let (Some(v4), true) = (v6.to_ipv4_mapped(), length >= 96) {
            let network = truncate_v4(v4, length - 96);
            let adjustment = if network.network_address() == v4 {
                Adjustment::MappedToIpv4
            } else {
                Adjustment::MappedHostBitsCleared
            };
            return Ok(ParsedPrefix {
                network: IpNetwork::V4(network),
                adjustment: Some(adjustment),
            });
        }
    }
    Ok(ParsedPrefix {
        network,
        adjustment: host_bits_set.then_some(Adjustment::HostBitsCleared),
    })
}

fn truncate_v4(address: Ipv4Addr, length: u8) -> Ipv4Network {
    Ipv4Network::new_truncate(address, length).expect("length was checked against 32")
}

fn missing_length_reason(text: &str) -> String {
    match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => format!("missing prefix length; write {text}/32 for a single address"),
        Ok(IpAddr::V6(_)) => {
            format!("missing prefix length; write {text}/128 for a single address")
        }
        Err(_) => {
            "not a prefix; write an address, '/', and a prefix length, such as 192.168.1.0/24"
                .to_owned()
        }
    }
}

fn parse_address(text: &str) -> Result<IpAddr, String> {
    text.parse::<IpAddr>().map_err(|_| {
        if has_leading_zero_octet(text) {
            "leading zeros in an IPv4 octet are ambiguous (some tools read them as octal); \
             write each octet without them"
                .to_owned()
        } else if text.contains(char::is_whitespace) {
            format!("{text:?} contains a space; write the prefix without spaces")
        } else if let Some(octet) = octet_over_255(text) {
            format!("{text:?} is not an IPv4 or IPv6 address: octet {octet} is over 255")
        } else {
            format!("{text:?} is not an IPv4 or IPv6 address")
        }
    })
}

/// Returns the first octet over 255 of dotted-quad `text`, if it is one.
fn octet_over_255(text: &str) -> Option<&str> {
    let octets: Vec<&str> = text.split('.').collect();
    let numeric = |octet: &&str| !octet.is_empty() && octet.bytes().all(|b| b.is_ascii_digit());
    if octets.len() != 4 || !octets.iter().all(numeric) {
        return None;
    }
    octets
        .into_iter()
        .find(|octet| octet.parse::<u32>().map_or(true, |value| value > 255))
}

fn has_leading_zero_octet(text: &str) -> bool {
    let dotted = text.rsplit(':').next().unwrap_or(text);
    dotted.split('.').any(|octet| {
        octet.len() > 1 && octet.starts_with('0') && octet.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Accepts decimal digits without sign or leading zeros, up to `max`.
fn parse_length(text: &str, max: u8) -> Result<u8, String> {
    let in_range = || format!("prefix length {text:?} is out of range; use 0 to {max}");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "prefix length {text:?} is not a number from 0 to {max}"
        ));
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(format!(
            "prefix length {text:?} has a leading zero; write it without"
        ));
    }
    let length: u8 = text.parse().map_err(|_| in_range())?;
    if length > max {
        return Err(in_range());
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn network(text: &str) -> String {
        parse_prefix(text).unwrap().network.to_string()
    }

    #[test]
    fn plain_prefixes_parse_unchanged() {
        for text in [
            "192.168.1.0/24",
            "0.0.0.0/0",
            "10.1.2.3/32",
            "::/0",
            "fd12:3456:789a::/48",
            "2001:db8::1/128",
        ] {
            let parsed = parse_prefix(text).unwrap();
            assert_eq!(parsed.network.to_string(), text);
            assert_eq!(parsed.adjustment, None, "{text}");
        }
    }

    #[test]
    fn host_bits_are_cleared_with_note() {
        let parsed = parse_prefix("192.168.1.7/24").unwrap();
        assert_eq!(parsed.network.to_string(), "192.168.1.0/24");
        assert_eq!(parsed.adjustment, Some(Adjustment::HostBitsCleared));
        assert_eq!(network("fd12::1/16"), "fd12::/16");
    }

    #[test]
    fn mapped_prefix_becomes_ipv4() {
        let parsed = parse_prefix("::ffff:192.168.0.0/112").unwrap();
        assert_eq!(parsed.network.to_string(), "192.168.0.0/16");
        assert_eq!(parsed.adjustment, Some(Adjustment::MappedToIpv4));

        let parsed = parse_prefix("::ffff:10.20.0.0/96").unwrap();
        assert_eq!(parsed.network.to_string(), "0.0.0.0/0");
        assert_eq!(parsed.adjustment, Some(Adjustment::MappedHostBitsCleared));
    }

    #[test]
    fn invalid_prefixes_explain_the_fix() {
        let cases = [
            ("10.1.2.3", "write 10.1.2.3/32"),
            ("fd00::1", "write fd00::1/128"),
            ("010.0.0.0/8", "leading zeros"),
            ("10.0.0.0/33", "out of range"),
            ("fd00::/129", "out of range"),
            ("10.0.0.0/08", "leading zero"),
            ("10.0.0.0/", "not a number"),
            ("10.0.0.0/+8", "not a number"),
            ("10.0.0.0/8/8", "not a number"),
            ("fe80::%eth0/64", "zone"),
            ("fe80::/10%eth0", "zone"),
            ("10.0.0.0 /8", "\"10.0.0.0 \" contains a space"),
            ("300.1.1.1/8", "octet 300 is over 255"),
            ("10.1.2.99999999999/32", "octet 99999999999 is over 255"),
            ("10.1.2/24", "\"10.1.2\" is not an IPv4 or IPv6 address"),
            ("home/24", "is not an IPv4 or IPv6 address"),
            ("", "not a prefix"),
            ("10.0.0.0/99999999999", "out of range"),
        ];
        for (text, expected) in cases {
            let reason = parse_prefix(text).expect_err(text);
            assert!(reason.contains(expected), "{text:?}: {reason}");
        }
    }

    /// Pieces that join into near-valid IPv4 prefixes: octets with leading
    /// zeros or out of range, stray signs, spaces and IPv6 separators.
    const PIECES: &[&str] = &[
        "0", "00", "01", "1", "9", "10", "25", "32", "33", "099", "255", "256", "300", "1000", ".",
        ".", ".", "/", "/", "+", "-", " ", ":", "::", "a", "ffff", "%",
    ];

    fn near_ipv4() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u32..=300, 0u32..=300, 0u32..=300, 0u32..=300, 0u32..=40)
                .prop_map(|(a, b, c, d, n)| format!("{a}.{b}.{c}.{d}/{n}")),
            prop::collection::vec(prop::sample::select(PIECES), 0..12)
                .prop_map(|pieces| pieces.concat()),
            "[0-9./:+ a-f]{0,24}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn fast_path_agrees_with_general(text in near_ipv4()) {
            // The fast path handles exactly the plain IPv4 prefixes, and
            // returns the same network and adjustment for them.
            let general = parse_prefix_general(&text).ok().filter(|_| !text.contains(':'));
            prop_assert_eq!(parse_ipv4_fast(&text), general);
        }

        #[test]
        fn every_ipv4_prefix_takes_fast_path(address in any::<u32>(), length in 0u8..=32) {
            let text = format!("{}/{length}", Ipv4Addr::from(address));
            let fast = parse_ipv4_fast(&text);
            prop_assert!(fast.is_some(), "{}", text);
            prop_assert_eq!(fast, parse_prefix_general(&text).ok());
        }
    }
}
