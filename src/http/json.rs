//! Hand-written JSON for the classification responses, the hottest HTTP
//! responses. The output is byte for byte what serde_json writes for the
//! same fields, which the tests check.

use std::io::Write as _;

use crate::classify::Classification;
use crate::grpc::batch::StackText;

/// Bytes that most single-address responses fit in, so one allocation
/// usually suffices.
pub const TYPICAL_ANSWER_LEN: usize = 160;

/// Minimum size of one result in a batch response: an empty address, no
/// set and no network, and a generation of one digit.
pub const MIN_RESULT_LEN: usize = 80;

/// Appends one result object: `ip`, `verdict`, `internal`, `set`, `network`,
/// `generation`, then `error` only for an invalid address.
pub fn write_classification(
    out: &mut Vec<u8>,
    ip: &str,
    found: &Classification<'_>,
    generation: u64,
) {
    out.extend_from_slice(b"{\"ip\":");
    write_string(out, ip);
    out.extend_from_slice(b",\"verdict\":\"");
    out.extend_from_slice(found.verdict.as_str().as_bytes());
    out.extend_from_slice(if found.is_internal() {
        b"\",\"internal\":true,\"set\":"
    } else {
        b"\",\"internal\":false,\"set\":"
    });
    write_string(out, found.set.map(|set| set.name.as_str()).unwrap_or(""));
    out.extend_from_slice(b",\"network\":");
    match found.prefix {
        Some(entry) => write_string(out, StackText::network(&entry.network).as_str()),
        None => out.extend_from_slice(b"\"\""),
    }
    out.extend_from_slice(b",\"generation\":");
    write!(out, "{generation}").expect("writing to a Vec never fails");
    if let Some(error) = &found.error {
        out.extend_from_slice(b",\"error\":");
        write_string(out, &error.to_string());
    }
    out.push(b'}');
}

/// Appends `text` as a JSON string with serde_json's escapes: `\"`, `\\`,
/// the short forms `\b \t \n \f \r`, and `\u00XX` for other control bytes.
pub fn write_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..at]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let unicode = [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ];
            out.extend_from_slice(&unicode);
        } else {
            out.extend_from_slice(escape);
        }
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;
    use crate::classify::classify_text;
    use crate::config;
    use crate::table::Table;

    /// The serde form the handwritten writer must reproduce.
    #[derive(Serialize)]
    struct Reference<'a> {
        ip: &'a str,
        verdict: &'static str,
        internal: bool,
        set: &'a str,
        network: String,
        generation: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    }

    fn reference(ip: &str, found: &Classification<'_>, generation: u64) -> String {
        serde_json::to_string(&Reference {
            ip,
            verdict: found.verdict.as_str(),
            internal: found.is_internal(),
            set: found.set.map(|set| set.name.as_str()).unwrap_or(""),
            network: found
                .prefix
                .map(|entry| entry.network.to_string())
                .unwrap_or_default(),
            generation,
            error: found.error.as_ref().map(|error| error.to_string()),
        })
        .unwrap()
    }

    #[test]
    fn classification_matches_serde_json() {
        let text = "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\", \"fd00::/8\"]\n\
                    [sets.guest]\ninternal = false\nnetworks = [\"10.9.0.0/16\"]\n";
        let loaded = config::parse(text, "c.toml".as_ref(), &mut |_| unreachable!()).unwrap();
        let table = Table::new(loaded.spec, 12);
        let ips = [
            "10.1.2.3",
            "10.9.0.1",
            "8.8.8.8",
            "255.255.255.255",
            "fd00::1%eth0",
            "::ffff:10.0.0.1",
            "",
            " 10.1.2.3\t",
            "quote\"back\\slash",
            "ctl\u{0}\u{1f}\u{7f}\u{8}\u{c}\n\r",
            "unicode é 漢字 \u{2028}",
            "10.1.2.3:8080",
        ];
        for ip in ips {
            let found = classify_text(&table, ip);
            let mut ours = Vec::new();
            write_classification(&mut ours, ip, &found, 12);
            let expected = reference(ip, &found, 12);
            assert_eq!(String::from_utf8(ours).unwrap(), expected, "{ip:?}");
        }
    }
}
