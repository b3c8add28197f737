//! The work of the two batch methods, apart from tonic: classifying a text
//! or packed batch and writing the `IsInternalResponse` protobuf bytes.
//!
//! The handlers and the benchmarks call these same functions. Nothing here
//! allocates per address, except the error text of an invalid address.

use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::BufMut;
use prost::encoding::{encode_varint, encoded_len_varint};

use crate::address;
use crate::classify::{classify_text, Classification};
use crate::metrics::BatchTally;
use crate::table::{Table, Verdict};

/// Wire tag of `IsInternalResponse.results` and `Classification.ip`: field 1,
/// length-delimited.
const TAG_FIELD_1_LEN: u8 = 0x0a;
/// Wire tag of `IsInternalResponse.generation` and `Classification.verdict`:
/// field 2, varint.
const TAG_FIELD_2_VARINT: u8 = 0x10;
/// Wire tag of `Classification.internal`: field 3, varint.
const TAG_FIELD_3_VARINT: u8 = 0x18;
const TAG_SET: u8 = 0x22;
const TAG_NETWORK: u8 = 0x2a;
const TAG_ERROR: u8 = 0x32;

/// Maximum text length of a prefix: a full IPv6 address (39 bytes), "/"
/// and "128", rounded up.
const MAX_NETWORK_TEXT: usize = 48;

/// Returns the `ipclass.v1.Verdict` number of a verdict, as sent on the wire.
pub fn verdict_code(verdict: Verdict) -> u8 {
    super::proto_verdict(verdict) as u8
}

/// Classifies each text address of a batch, in order.
pub fn classify_texts<'t>(table: &'t Table, ips: &[&str]) -> Vec<Classification<'t>> {
    ips.iter().map(|ip| classify_text(table, ip)).collect()
}

/// Addresses looked up together, so the compiled table can overlap their
/// cache misses.
const LOOKUP_BLOCK: usize = 256;

/// Classifies concatenated 4-byte IPv4 addresses into one verdict byte each
/// and counts them in `tally`. A trailing partial address is ignored; callers
/// check the length first.
pub fn classify_packed_ipv4(table: &Table, bytes: &[u8], tally: &mut BatchTally) -> Vec<u8> {
    let mut verdicts = Vec::with_capacity(bytes.len() / 4);
    let mut keys = [0u32; LOOKUP_BLOCK];
    let mut found = [0u32; LOOKUP_BLOCK];
    for block in bytes.chunks(4 * LOOKUP_BLOCK) {
        let count = block.len() / 4;
        for (key, raw) in keys.iter_mut().zip(block.chunks_exact(4)) {
            *key = u32::from_be_bytes(raw.try_into().expect("chunks_exact yields 4 bytes"));
        }
        table
            .compiled()
            .lookup_v4_batch(&keys[..count], &mut found[..count]);
        for (&key, &index) in keys[..count].iter().zip(&found[..count]) {
            let sentinel = address::is_sentinel(Ipv4Addr::from(key).into());
            verdicts.push(verdict_of(table, sentinel, index, tally));
        }
    }
    verdicts
}

/// Classifies concatenated 16-byte IPv6 addresses into one verdict byte each
/// and counts them in `tally`; IPv4-mapped addresses are looked up as IPv4.
pub fn classify_packed_ipv6(table: &Table, bytes: &[u8], tally: &mut BatchTally) -> Vec<u8> {
    let mut verdicts = Vec::with_capacity(bytes.len() / 16);
    for chunk in bytes.chunks_exact(16) {
        let raw: [u8; 16] = chunk.try_into().expect("chunks_exact yields 16 bytes");
        let found = table.classify(address::normalize(Ipv6Addr::from(raw).into()));
        tally.add_verdict(found.verdict, found.prefix.map(|entry| entry.set));
        verdicts.push(verdict_code(found.verdict));
    }
    verdicts
}

/// Turns a compiled-table result into a verdict byte and counts it.
fn verdict_of(table: &Table, sentinel: bool, index: u32, tally: &mut BatchTally) -> u8 {
    let (verdict, set) = if sentinel {
        (Verdict::Unknown, None)
    } else if index == u32::MAX {
        (Verdict::External, None)
    } else {
        let set = table.prefix(index).set;
        let verdict = if table.set(set).internal {
            Verdict::Internal
        } else {
            Verdict::External
        };
        (verdict, Some(set))
    };
    tally.add_verdict(verdict, set);
    verdict_code(verdict)
}

/// Writes the protobuf encoding of an `IsInternalResponse` for `ips` and
/// their `results`, byte for byte what prost writes for the same message.
///
/// `scratch` is reused between calls so that encoding allocates nothing per
/// address.
pub fn encode_text_response(
    ips: &[&str],
    results: &[Classification<'_>],
    generation: u64,
    scratch: &mut Vec<u8>,
    out: &mut impl BufMut,
) {
    debug_assert_eq!(ips.len(), results.len(), "one result per address");
    for (ip, found) in ips.iter().zip(results) {
        scratch.clear();
        encode_classification(ip, found, scratch);
        out.put_u8(TAG_FIELD_1_LEN);
        encode_varint(scratch.len() as u64, out);
        out.put_slice(scratch);
    }
    if generation != 0 {
        out.put_u8(TAG_FIELD_2_VARINT);
        encode_varint(generation, out);
    }
}

/// Returns an upper bound of the bytes [`encode_text_response`] writes, so
/// the caller can reserve once.
pub fn text_response_capacity(ips: &[&str]) -> usize {
    let per_address = 2 + 3 + 2 + 2 + 2 + 64 + 2 + MAX_NETWORK_TEXT + 2;
    ips.iter()
        .map(|ip| ip.len() + encoded_len_varint(ip.len() as u64) + per_address)
        .sum::<usize>()
        + 11
}

/// Writes one `Classification` message without its length prefix. Fields go
/// in field-number order and default values are left out, as prost does.
fn encode_classification(ip: &str, found: &Classification<'_>, out: &mut Vec<u8>) {
    put_string(out, TAG_FIELD_1_LEN, ip);
    out.put_u8(TAG_FIELD_2_VARINT);
    out.put_u8(verdict_code(found.verdict));
    if found.is_internal() {
        out.put_u8(TAG_FIELD_3_VARINT);
        out.put_u8(1);
    }
    if let Some(set) = found.set {
        put_string(out, TAG_SET, &set.name);
    }
    if let Some(entry) = found.prefix {
        let mut text = StackText::new();
        write!(text, "{}", entry.network).expect("a prefix fits in MAX_NETWORK_TEXT bytes");
        put_string(out, TAG_NETWORK, text.as_str());
    }
    if let Some(error) = &found.error {
        put_string(out, TAG_ERROR, &error.to_string());
    }
}

fn put_string(out: &mut Vec<u8>, tag: u8, text: &str) {
    if text.is_empty() {
        return;
    }
    out.put_u8(tag);
    encode_varint(text.len() as u64, out);
    out.put_slice(text.as_bytes());
}

/// A prefix rendered on the stack, so that writing its text allocates nothing.
pub(crate) struct StackText {
    bytes: [u8; MAX_NETWORK_TEXT],
    len: usize,
}

impl StackText {
    pub(crate) fn new() -> StackText {
        StackText {
            bytes: [0; MAX_NETWORK_TEXT],
            len: 0,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("only str fragments are written")
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.len + text.len();
        if end > self.bytes.len() {
            return Err(fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::config;
    use crate::grpc::to_proto;
    use crate::proto::IsInternalResponse;

    fn table() -> Table {
        let text = r#"
[sets.lan]
internal = true
networks = ["10.0.0.0/8", "192.168.1.0/24", "fd00::/8", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ff00/120"]
[sets.guest]
internal = false
networks = ["10.9.0.0/16"]
"#;
        let loaded = config::parse(text, "c.toml".as_ref(), &mut |_| unreachable!())
            .expect("test config is valid");
        Table::new(loaded.spec, 7)
    }

    #[test]
    fn text_response_matches_prost_bytes() {
        let table = table();
        let ips = [
            "10.1.2.3",
            " 10.9.1.1 ",
            "8.8.8.8",
            "0.0.0.0",
            "::ffff:192.168.1.9",
            "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ff01",
            "fd00::1%eth0",
            "",
            "10.1.2.3:80",
            "not an \"address\"\u{1}é",
            "1:2:3:4:5:6:7:8:9",
        ];
        let results = classify_texts(&table, &ips);

        let mut ours = Vec::new();
        let mut scratch = Vec::new();
        encode_text_response(&ips, &results, 7, &mut scratch, &mut ours);

        let reference = IsInternalResponse {
            results: ips
                .iter()
                .zip(results.clone())
                .map(|(ip, found)| to_proto(ip.to_string(), found))
                .collect(),
            generation: 7,
        };
        assert_eq!(ours, reference.encode_to_vec());
        assert!(ours.len() <= text_response_capacity(&ips));
    }

    #[test]
    fn empty_text_batch_encodes_generation_only() {
        let mut ours = Vec::new();
        encode_text_response(&[], &[], 3, &mut Vec::new(), &mut ours);
        let reference = IsInternalResponse {
            results: Vec::new(),
            generation: 3,
        };
        assert_eq!(ours, reference.encode_to_vec());
    }

    #[test]
    fn packed_verdicts_follow_text_verdicts() {
        let table = table();
        let ipv4 = [
            "10.1.2.3",
            "10.9.0.1",
            "8.8.8.8",
            "0.0.0.0",
            "255.255.255.255",
        ];
        let bytes: Vec<u8> = ipv4
            .iter()
            .flat_map(|ip| ip.parse::<Ipv4Addr>().unwrap().octets())
            .collect();
        let expected: Vec<u8> = ipv4
            .iter()
            .map(|ip| verdict_code(classify_text(&table, ip).verdict))
            .collect();
        let mut tally = BatchTally::new(&table);
        assert_eq!(classify_packed_ipv4(&table, &bytes, &mut tally), expected);

        let ipv6 = ["fd00::1", "::ffff:10.1.2.3", "2001:db8::1", "::"];
        let bytes: Vec<u8> = ipv6
            .iter()
            .flat_map(|ip| ip.parse::<Ipv6Addr>().unwrap().octets())
            .collect();
        let expected: Vec<u8> = ipv6
            .iter()
            .map(|ip| verdict_code(classify_text(&table, ip).verdict))
            .collect();
        assert_eq!(classify_packed_ipv6(&table, &bytes, &mut tally), expected);
    }
}
