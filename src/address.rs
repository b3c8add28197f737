//! Turns the address text a caller sends into the address that is looked up.
//!
//! This module owns trimming, zone removal, IPv4-mapped unwrapping, the
//! sentinel addresses and the explanation of why a text is not an address.
//! It does not depend on prefix tables or APIs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// Texts longer than this are rejected before parsing. The longest IPv6 text
/// form is 45 characters, which leaves room for a zone name.
pub const MAX_ADDRESS_LEN: usize = 128;

/// Number of characters of an invalid text that an error message repeats.
const ECHO_LEN: usize = 64;

/// An address ready for lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalized {
    /// An address to look up; IPv4-mapped IPv6 is already unwrapped to IPv4.
    Lookup(IpAddr),
    /// `0.0.0.0`, `::` or `255.255.255.255`: placeholders that callers such as
    /// identity providers send when they could not determine the client.
    Sentinel(IpAddr),
}

/// Reason a text is not an address, with the offending text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddressError {
    #[error("empty address: send an IPv4 or IPv6 address")]
    Empty,
    #[error(
        "address of {len} bytes is too long: an IP address is at most {MAX_ADDRESS_LEN} bytes"
    )]
    TooLong { len: usize },
    #[error("invalid address {0:?}: CIDR notation names a network, so send the address without the /length")]
    Cidr(String),
    #[error("invalid address {0:?}: remove the port and send the address alone")]
    Port(String),
    #[error("invalid address {0:?}: remove the brackets (and any port) around the IPv6 address")]
    Brackets(String),
    #[error("invalid address {0:?}: leading zeros in an IPv4 octet are ambiguous (some parsers read them as octal), so write each octet without them")]
    LeadingZeros(String),
    #[error("invalid address {0:?}: host names are not resolved, so send the client's IP address")]
    HostName(String),
    #[error("invalid address {0:?}: a zone (%name) is only allowed on an IPv6 address")]
    ZoneOnIpv4(String),
    #[error("invalid address {0:?}: the zone after '%' is empty")]
    EmptyZone(String),
    #[error("invalid address {0:?}: a zone is an interface name or number of letters, digits, '-', '.', '_' or '~', so send the zone alone or drop it")]
    InvalidZone(String),
    #[error("invalid address {0:?}: shorthand IPv4 forms that inet_aton accepts, such as 127.1, 2130706433 or 0x7f.0.0.1, are not accepted, so write all four decimal octets, such as 127.0.0.1")]
    Shorthand(String),
    #[error("invalid address {0:?}: not an IPv4 or IPv6 address; send dotted-quad IPv4 such as 192.0.2.1, or IPv6 such as 2001:db8::1")]
    Malformed(String),
    #[error("invalid address {0:?}: the text has bytes that are not UTF-8, shown as U+FFFD; send the address as ASCII text")]
    NotUtf8(String),
}

/// Parses address text: trims ASCII whitespace, drops an IPv6 zone, unwraps
/// IPv4-mapped IPv6 and recognizes the sentinel addresses.
pub fn parse(text: &str) -> Result<Normalized, AddressError> {
    // The limit counts the text as sent, whitespace included, so it also
    // bounds what a batch of addresses can carry.
    if text.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::TooLong { len: text.len() });
    }
    let trimmed = text.trim_ascii();
    if trimmed.is_empty() {
        return Err(AddressError::Empty);
    }

    if let Some(v4) = parse_dotted_quad(trimmed.as_bytes()) {
        return Ok(normalize(IpAddr::V4(v4)));
    }
    let (address, zone) = match trimmed.split_once('%') {
        Some((address, zone)) => (address, Some(zone)),
        None => (trimmed, None),
    };
    let parsed = match address.parse::<IpAddr>() {
        Ok(parsed) => parsed,
        Err(_) => return Err(diagnose(trimmed)),
    };
    match (zone, parsed) {
        (Some(""), _) => Err(AddressError::EmptyZone(echo(trimmed))),
        (Some(_), IpAddr::V4(_)) => Err(AddressError::ZoneOnIpv4(echo(trimmed))),
        (Some(zone), IpAddr::V6(_)) if !is_zone(zone) => {
            Err(AddressError::InvalidZone(echo(trimmed)))
        }
        _ => Ok(normalize(parsed)),
    }
}

/// Parses the dotted-quad form that std's `Ipv4Addr` parser accepts: four
/// decimal octets of one to three digits, at most 255, without leading
/// zeros. Returns `None` for anything else, so callers fall back to std's
/// parser, which then also rejects it as IPv4.
pub fn parse_dotted_quad(text: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut filled = 0;
    let mut value: u16 = 0;
    let mut digits = 0;
    for &byte in text {
        match byte {
            b'0'..=b'9' => {
                // A zero followed by another digit is a leading zero. With
                // it ruled out, a value of at most 255 has at most 3 digits.
                if digits > 0 && value == 0 {
                    return None;
                }
                value = value * 10 + u16::from(byte - b'0');
                if value > 255 {
                    return None;
                }
                digits += 1;
            }
            b'.' if digits > 0 && filled < 3 => {
                octets[filled] = value as u8;
                filled += 1;
                value = 0;
                digits = 0;
            }
            _ => return None,
        }
    }
    if digits == 0 || filled != 3 {
        return None;
    }
    octets[3] = value as u8;
    Some(Ipv4Addr::from(octets))
}

/// Returns whether `zone` uses only the unreserved characters that RFC 6874
/// allows in a zone, which rules out a hidden `/length`, port or NUL.
fn is_zone(zone: &str) -> bool {
    zone.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Unwraps IPv4-mapped IPv6 and recognizes the sentinel addresses. Other
/// embeddings of IPv4 in IPv6 (IPv4-compatible, NAT64, 6to4) stay IPv6,
/// because they name different hosts on different networks.
pub fn normalize(address: IpAddr) -> Normalized {
    let address = match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    if is_sentinel(address) {
        Normalized::Sentinel(address)
    } else {
        Normalized::Lookup(address)
    }
}

/// Returns whether `address` is one of the placeholders that never identify a
/// client: the unspecified addresses and the IPv4 limited broadcast.
pub fn is_sentinel(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4 == Ipv4Addr::UNSPECIFIED || v4 == Ipv4Addr::BROADCAST,
        IpAddr::V6(v6) => v6 == Ipv6Addr::UNSPECIFIED,
    }
}

/// Chooses the most helpful explanation for text that std's parser rejected.
fn diagnose(text: &str) -> AddressError {
    let value = echo(text);
    // Requests decode text that is not UTF-8 to U+FFFD, which no address
    // contains.
    if text.contains(char::REPLACEMENT_CHARACTER) {
        AddressError::NotUtf8(value)
    } else if text.contains('/') {
        AddressError::Cidr(value)
    } else if text.starts_with('[') {
        AddressError::Brackets(value)
    } else if looks_like_ipv4_with_port(text) {
        AddressError::Port(value)
    } else if has_leading_zero_octet(text) {
        AddressError::LeadingZeros(value)
    } else if is_ipv4_shorthand(text) {
        AddressError::Shorthand(value)
    } else if looks_like_host_name(text) {
        AddressError::HostName(value)
    } else {
        AddressError::Malformed(value)
    }
}

fn looks_like_ipv4_with_port(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((host, port)) => {
            host.parse::<Ipv4Addr>().is_ok()
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Finds a dotted-decimal part, alone or at the end of IPv6 text, in which an
/// octet has a leading zero, such as `010.0.0.1` or `::ffff:010.0.0.1`.
fn has_leading_zero_octet(text: &str) -> bool {
    let dotted = text.rsplit(':').next().unwrap_or(text);
    let octets: Vec<&str> = dotted.split('.').collect();
    octets.len() == 4
        && octets
            .iter()
            .all(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()))
        && octets.iter().any(|o| o.len() > 1 && o.starts_with('0'))
}

/// Finds the inet_aton forms other than four decimal octets: one to three
/// parts, such as `127.1` or `2130706433`, or any hexadecimal part, such as
/// `0x7f.0.0.1`. Four decimal parts that failed to parse are out of range.
fn is_ipv4_shorthand(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    let is_number = |part: &&str| match part.strip_prefix("0x").or(part.strip_prefix("0X")) {
        Some(hex) => !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()),
    };
    let has_hex = text.contains("0x") || text.contains("0X");
    parts.len() <= 4 && parts.iter().all(is_number) && (parts.len() < 4 || has_hex)
}

/// Host names contain a letter beyond the hexadecimal digits or, without any
/// colon, any letter at all.
fn looks_like_host_name(text: &str) -> bool {
    let has_letter = text.bytes().any(|b| b.is_ascii_alphabetic());
    let all_name_bytes = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    has_letter && all_name_bytes && !text.contains(':')
}

/// Shortens text for an error message, so a huge input is not repeated whole.
fn echo(text: &str) -> String {
    match text.char_indices().nth(ECHO_LEN) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(text: &str) -> IpAddr {
        match parse(text) {
            Ok(Normalized::Lookup(address)) => address,
            other => panic!("{text:?} parsed to {other:?}, expected an address to look up"),
        }
    }

    #[test]
    fn whitespace_is_trimmed() {
        assert_eq!(
            lookup(" \t10.1.2.3\r\n"),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn zone_is_dropped_from_ipv6() {
        assert_eq!(lookup("fe80::1%eth0"), "fe80::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn mapped_ipv6_unwraps_in_every_spelling() {
        let expected: IpAddr = "192.168.1.10".parse().unwrap();
        for text in [
            "::ffff:192.168.1.10",
            "::FFFF:c0a8:10a",
            "0:0:0:0:0:ffff:192.168.1.10",
            "0000:0000:0000:0000:0000:ffff:c0a8:010a",
        ] {
            assert_eq!(lookup(text), expected, "{text}");
        }
    }

    #[test]
    fn other_ipv4_embeddings_stay_ipv6() {
        for text in ["::192.168.1.10", "64:ff9b::192.168.1.10", "2002:c0a8:10a::"] {
            assert!(lookup(text).is_ipv6(), "{text}");
        }
    }

    #[test]
    fn sentinels_are_recognized() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "::",
            "::ffff:0.0.0.0",
            "::ffff:255.255.255.255",
        ] {
            assert!(matches!(parse(text), Ok(Normalized::Sentinel(_))), "{text}");
        }
    }

    type ErrorCheck = fn(&AddressError) -> bool;

    #[test]
    fn invalid_forms_get_specific_errors() {
        let cases: &[(&str, ErrorCheck)] = &[
            ("", |e| matches!(e, AddressError::Empty)),
            ("   ", |e| matches!(e, AddressError::Empty)),
            ("10.0.0.0/8", |e| matches!(e, AddressError::Cidr(_))),
            ("fd00::/8", |e| matches!(e, AddressError::Cidr(_))),
            ("10.1.2.3:8080", |e| matches!(e, AddressError::Port(_))),
            ("[::1]:443", |e| matches!(e, AddressError::Brackets(_))),
            ("[::1]", |e| matches!(e, AddressError::Brackets(_))),
            ("010.0.0.1", |e| matches!(e, AddressError::LeadingZeros(_))),
            ("10.0.0.01", |e| matches!(e, AddressError::LeadingZeros(_))),
            ("::ffff:010.0.0.1", |e| {
                matches!(e, AddressError::LeadingZeros(_))
            }),
            ("localhost", |e| matches!(e, AddressError::HostName(_))),
            ("auth.example.com", |e| {
                matches!(e, AddressError::HostName(_))
            }),
            ("10.1.2.3%eth0", |e| {
                matches!(e, AddressError::ZoneOnIpv4(_))
            }),
            ("fe80::1%", |e| matches!(e, AddressError::EmptyZone(_))),
            ("1.2.3", |e| matches!(e, AddressError::Shorthand(_))),
            ("127.1", |e| matches!(e, AddressError::Shorthand(_))),
            ("2130706433", |e| matches!(e, AddressError::Shorthand(_))),
            ("0x7f.0.0.1", |e| matches!(e, AddressError::Shorthand(_))),
            ("0X7F000001", |e| matches!(e, AddressError::Shorthand(_))),
            ("１２７.０.０.１", |e| {
                matches!(e, AddressError::Malformed(_))
            }),
            ("10.0.0.1\0", |e| matches!(e, AddressError::Malformed(_))),
            ("1.2.3.256", |e| matches!(e, AddressError::Malformed(_))),
            ("::g", |e| matches!(e, AddressError::Malformed(_))),
            ("1:2:3:4:5:6:7:8:9", |e| {
                matches!(e, AddressError::Malformed(_))
            }),
        ];
        for (text, is_expected) in cases {
            let error = parse(text).expect_err(text);
            assert!(is_expected(&error), "{text:?} gave {error:?}");
        }
    }

    #[test]
    fn error_message_names_the_value() {
        let message = parse("10.1.2.3:8080").unwrap_err().to_string();
        assert!(message.contains("\"10.1.2.3:8080\""), "{message}");
    }

    #[test]
    fn malformed_message_shows_valid_forms() {
        for text in ["１２７.０.０.１", "10.0.0.1\0", "1.2.3.256"] {
            let message = parse(text).unwrap_err().to_string();
            assert!(message.contains("not an IPv4 or IPv6 address"), "{message}");
            assert!(message.contains("192.0.2.1"), "{message}");
            assert!(message.contains("2001:db8::1"), "{message}");
        }
    }

    #[test]
    fn shorthand_message_asks_for_four_octets() {
        for text in ["127.1", "2130706433", "0x7f.0.0.1"] {
            let message = parse(text).unwrap_err().to_string();
            assert!(message.contains(&format!("{text:?}")), "{message}");
            assert!(message.contains("shorthand IPv4"), "{message}");
            assert!(message.contains("inet_aton"), "{message}");
            assert!(message.contains("all four decimal octets"), "{message}");
        }
    }

    #[test]
    fn dotted_quad_matches_std_parser() {
        let cases = [
            "0.0.0.0",
            "1.2.3.4",
            "255.255.255.255",
            "10.0.0.1",
            "192.168.100.200",
            "256.1.1.1",
            "1.2.3.256",
            "01.2.3.4",
            "1.2.3.00",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            ".1.2.3.4",
            "1.2.3.4.",
            "1234.1.1.1",
            "1.2.3.4 ",
            "+1.2.3.4",
            "1.2.3.-4",
            "",
            "::1",
            "1.2.3.4%eth0",
        ];
        for text in cases {
            assert_eq!(
                parse_dotted_quad(text.as_bytes()),
                text.parse::<Ipv4Addr>().ok(),
                "{text:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn dotted_quad_agrees_with_std(text in "[0-9.]{0,17}") {
            proptest::prop_assert_eq!(
                parse_dotted_quad(text.as_bytes()),
                text.parse::<Ipv4Addr>().ok()
            );
        }

        #[test]
        fn dotted_quad_reads_every_address(bits: u32) {
            let address = Ipv4Addr::from(bits);
            proptest::prop_assert_eq!(
                parse_dotted_quad(address.to_string().as_bytes()),
                Some(address)
            );
        }
    }

    #[test]
    fn padded_address_over_limit_is_rejected() {
        let text = format!("{}10.8.0.5", " ".repeat(MAX_ADDRESS_LEN));
        assert_eq!(
            parse(&text),
            Err(AddressError::TooLong {
                len: MAX_ADDRESS_LEN + 8
            })
        );
    }

    #[test]
    fn overlong_text_is_rejected_before_parsing() {
        let text = "1".repeat(MAX_ADDRESS_LEN + 1);
        assert_eq!(
            parse(&text),
            Err(AddressError::TooLong {
                len: MAX_ADDRESS_LEN + 1
            })
        );
    }
}
