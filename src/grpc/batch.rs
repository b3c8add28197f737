//! The work of the two batch methods, apart from tonic: classifying a text
//! or packed batch and writing the `IsInternalResponse` protobuf bytes.
//!
//! The handlers and the benchmarks call these same functions. Nothing here
//! allocates per address, except the error text of an invalid address.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::BufMut;
use ip_network::IpNetwork;
use prost::encoding::{encode_varint, encoded_len_varint};

use crate::address;
use crate::classify::{classify_text, Classification};
use crate::metrics::BatchTally;
use crate::table::{PrefixInfo, SetId, Table, Verdict};

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

/// Value of a compiled-table lookup that no prefix matched.
const NO_MATCH: u32 = u32::MAX;

/// Returns the `ipclass.v1.Verdict` number of a verdict, as sent on the wire.
pub fn verdict_code(verdict: Verdict) -> u8 {
    super::proto_verdict(verdict) as u8
}

/// Addresses looked up together, so the compiled table can overlap their
/// cache misses.
const LOOKUP_BLOCK: usize = 256;

/// Classifies concatenated 4-byte IPv4 addresses into one verdict byte each
/// and counts them in `tally`. A trailing partial address is ignored; callers
/// check the length first.
pub fn classify_packed_ipv4(table: &Table, bytes: &[u8], tally: &mut BatchTally) -> Vec<u8> {
    let mut verdicts = Vec::with_capacity(bytes.len() / 4);
    let mut slots = SlotTally::new(table);
    let prefixes = table.prefixes();
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
        let pairs = keys[..count].iter().zip(&found[..count]);
        verdicts.extend(pairs.map(|(&key, &value)| slots.add(prefixes, key, value)));
    }
    slots.finish(table, tally);
    verdicts
}

/// Classifies concatenated 16-byte IPv6 addresses into one verdict byte each
/// and counts them in `tally`. IPv4-mapped addresses are looked up as IPv4.
/// A trailing partial address is ignored, because callers check the length
/// first.
pub fn classify_packed_ipv6(table: &Table, bytes: &[u8], tally: &mut BatchTally) -> Vec<u8> {
    let mut verdicts = Vec::with_capacity(bytes.len() / 16);
    let mut slots = SlotTally::new(table);
    let prefixes = table.prefixes();
    let compiled = table.compiled();
    let mut keys = [0u128; LOOKUP_BLOCK];
    let mut positions = [0usize; LOOKUP_BLOCK];
    let mut found = [0u32; LOOKUP_BLOCK];
    for block in bytes.chunks(16 * LOOKUP_BLOCK) {
        let first = verdicts.len();
        verdicts.resize(first + block.len() / 16, 0);
        // Mapped addresses are looked up as IPv4 right away. The rest go to
        // one batch lookup in the IPv6 trie, which mapped addresses would
        // only slow down: with `::1/128` in the table they walk its chain.
        let mut count = 0;
        for (position, raw) in block.chunks_exact(16).enumerate() {
            let key = u128::from_be_bytes(raw.try_into().expect("chunks_exact yields 16 bytes"));
            if let Some(v4) = Ipv6Addr::from(key).to_ipv4_mapped() {
                let key = u32::from(v4);
                let value = compiled.lookup_v4(key).unwrap_or(NO_MATCH);
                verdicts[first + position] = slots.add(prefixes, key, value);
            } else {
                keys[count] = key;
                positions[count] = first + position;
                count += 1;
            }
        }
        compiled.lookup_v6_batch(&keys[..count], &mut found[..count]);
        for ((&key, &value), &position) in keys.iter().zip(&found).zip(&positions).take(count) {
            verdicts[position] = slots.add_v6(prefixes, key, value);
        }
    }
    slots.finish(table, tally);
    verdicts
}

/// Verdict bytes and hit counts of a packed batch by slot: one slot per set,
/// then one for addresses that no prefix matched and one for sentinels. A
/// lookup then needs one load for its set and one for its verdict, both in
/// small arrays.
struct SlotTally {
    codes: Vec<u8>,
    hits: Vec<u64>,
}

impl SlotTally {
    fn new(table: &Table) -> SlotTally {
        let mut codes: Vec<u8> = table
            .sets()
            .iter()
            .map(|set| verdict_code(set_verdict(set.internal)))
            .collect();
        codes.push(verdict_code(Verdict::External));
        codes.push(verdict_code(Verdict::Unknown));
        SlotTally {
            hits: vec![0; codes.len()],
            codes,
        }
    }

    /// Counts the IPv4 address `key`, whose lookup returned `value`, and
    /// returns its verdict byte.
    #[inline]
    fn add(&mut self, prefixes: &[PrefixInfo], key: u32, value: u32) -> u8 {
        let sentinel = address::is_sentinel(IpAddr::V4(Ipv4Addr::from(key)));
        self.count(prefixes, sentinel, value)
    }

    /// Counts the IPv6 address `key`, not IPv4-mapped, whose lookup
    /// returned `value`, and returns its verdict byte.
    #[inline]
    fn add_v6(&mut self, prefixes: &[PrefixInfo], key: u128, value: u32) -> u8 {
        let sentinel = address::is_sentinel(IpAddr::V6(Ipv6Addr::from(key)));
        self.count(prefixes, sentinel, value)
    }

    #[inline]
    fn count(&mut self, prefixes: &[PrefixInfo], sentinel: bool, value: u32) -> u8 {
        let slot = if sentinel {
            self.codes.len() - 1
        } else if value == NO_MATCH {
            self.codes.len() - 2
        } else {
            usize::from(prefixes[value as usize].set)
        };
        self.hits[slot] += 1;
        self.codes[slot]
    }

    /// Adds the counts to `tally`.
    fn finish(self, table: &Table, tally: &mut BatchTally) {
        let (unmatched, unknown) = (
            self.hits[self.hits.len() - 2],
            self.hits[self.hits.len() - 1],
        );
        for (id, (set, &hits)) in table.sets().iter().zip(&self.hits).enumerate() {
            if hits > 0 {
                tally.add_set_hits(SetId::try_from(id).expect("set ids fit SetId"), hits);
                tally.add_verdicts(set_verdict(set.internal), hits);
            }
        }
        tally.add_verdicts(Verdict::External, unmatched);
        tally.add_verdicts(Verdict::Unknown, unknown);
    }
}

fn set_verdict(internal: bool) -> Verdict {
    if internal {
        Verdict::Internal
    } else {
        Verdict::External
    }
}

/// Classifies the text addresses `ips`, counts them in `tally` and writes
/// the protobuf encoding of the `IsInternalResponse`, byte for byte what
/// prost writes for the same message.
///
/// Plain dotted-quad IPv4 addresses are looked up in blocks with the
/// compiled table's batch lookup. Every other text goes through
/// [`classify_text`]. Protobuf strings are UTF-8, so should bytes that are
/// not UTF-8 arrive, each invalid sequence is replaced with U+FFFD in the
/// verdict and in the echoed address.
pub fn write_text_response<'a>(
    table: &Table,
    ips: impl IntoIterator<Item = &'a [u8]>,
    tally: &mut BatchTally,
    out: &mut impl BufMut,
) {
    let mut ips = ips.into_iter();
    let mut block: [&[u8]; LOOKUP_BLOCK] = [&[]; LOOKUP_BLOCK];
    let mut is_ipv4 = [false; LOOKUP_BLOCK];
    let mut keys = [0u32; LOOKUP_BLOCK];
    let mut found = [0u32; LOOKUP_BLOCK];
    loop {
        let mut count = 0;
        for (slot, ip) in block.iter_mut().zip(ips.by_ref()) {
            *slot = ip;
            count += 1;
        }
        if count == 0 {
            break;
        }

        for ((ip, key), is_ipv4) in block[..count].iter().zip(&mut keys).zip(&mut is_ipv4) {
            // Longer text goes to `classify_text`, which rejects it.
            let parsed = (ip.len() <= address::MAX_ADDRESS_LEN)
                .then(|| address::parse_dotted_quad(ip.trim_ascii()))
                .flatten();
            *is_ipv4 = parsed.is_some();
            *key = parsed.map_or(0, u32::from);
        }
        table
            .compiled()
            .lookup_v4_batch(&keys[..count], &mut found[..count]);

        for position in 0..count {
            let ip = block[position];
            if is_ipv4[position] {
                let classification = classify_looked_up(table, keys[position], found[position]);
                tally.add(&classification);
                encode_classification(ip, &classification, out);
                continue;
            }
            let text = String::from_utf8_lossy(ip);
            let classification = classify_text(table, &text);
            tally.add(&classification);
            encode_classification(text.as_bytes(), &classification, out);
        }
    }
    if table.generation() != 0 {
        out.put_u8(TAG_FIELD_2_VARINT);
        encode_varint(table.generation(), out);
    }
}

/// Builds the classification of the IPv4 address `key` from the value that
/// the compiled table's lookup returned for it.
fn classify_looked_up(table: &Table, key: u32, value: u32) -> Classification<'_> {
    let (verdict, set, prefix) = if address::is_sentinel(IpAddr::V4(Ipv4Addr::from(key))) {
        (Verdict::Unknown, None, None)
    } else if value == NO_MATCH {
        (Verdict::External, None, None)
    } else {
        let entry = table.entry(value, IpAddr::V4(Ipv4Addr::from(key)));
        let set = table.set(entry.set);
        (set_verdict(set.internal), Some(set), Some(entry))
    };
    Classification {
        verdict,
        set,
        prefix,
        error: None,
    }
}

/// Returns an estimate of the bytes [`write_text_response`] writes for
/// `count` addresses that take `request_len` bytes as a request, so the
/// caller can reserve once. The estimate covers IPv4 networks only.
/// IPv6 networks and error texts can exceed it, because reserving for the
/// worst case would more than double the allocation of a typical batch.
pub fn text_response_capacity(table: &Table, request_len: usize, count: usize) -> usize {
    let longest_set = table.sets().iter().map(|set| set.name.len()).max();
    // Message tag and length, then the tags and lengths of its five fields,
    // the verdict and internal values, a set name and "255.255.255.255/32".
    let per_address = 3 + 10 + 2 + longest_set.unwrap_or(0) + 18;
    request_len + count * per_address + 11
}

/// Writes one `Classification` message with its tag and length prefix.
/// Fields go in field-number order and default values are left out, as
/// prost does.
fn encode_classification(ip: &[u8], found: &Classification<'_>, out: &mut impl BufMut) {
    let network = found.prefix.map(|entry| StackText::network(&entry.network));
    let network = network.as_ref().map_or(&[][..], StackText::as_bytes);
    let set = found.set.map_or(&[][..], |set| set.name.as_bytes());
    let error = found.error.as_ref().map(ToString::to_string);
    let error = error.as_ref().map_or(&[][..], |text| text.as_bytes());
    let internal = found.is_internal();

    let len = field_len(ip)
        + 2
        + if internal { 2 } else { 0 }
        + field_len(set)
        + field_len(network)
        + field_len(error);
    let code = verdict_code(found.verdict);

    // A message under 128 bytes has one-byte lengths throughout, so it is
    // built on the stack and handed to `out` in one call.
    if len < 0x80 {
        let mut message = MessageBuf::new();
        message.put(&[TAG_FIELD_1_LEN, len as u8]);
        message.put_field(TAG_FIELD_1_LEN, ip);
        message.put(&[TAG_FIELD_2_VARINT, code]);
        if internal {
            message.put(&[TAG_FIELD_3_VARINT, 1]);
        }
        message.put_field(TAG_SET, set);
        message.put_field(TAG_NETWORK, network);
        message.put_field(TAG_ERROR, error);
        out.put_slice(message.as_bytes());
        return;
    }

    out.put_u8(TAG_FIELD_1_LEN);
    encode_varint(len as u64, out);
    put_field(out, TAG_FIELD_1_LEN, ip);
    out.put_slice(&[TAG_FIELD_2_VARINT, code]);
    if internal {
        out.put_slice(&[TAG_FIELD_3_VARINT, 1]);
    }
    put_field(out, TAG_SET, set);
    put_field(out, TAG_NETWORK, network);
    put_field(out, TAG_ERROR, error);
}

/// A `Classification` message of under 128 bytes, with its tag and length,
/// being built on the stack.
struct MessageBuf {
    bytes: [u8; 130],
    len: usize,
}

impl MessageBuf {
    fn new() -> MessageBuf {
        MessageBuf {
            bytes: [0; 130],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Writes a string field, which is under 128 bytes because the whole
    /// message is. An empty string writes nothing.
    #[inline]
    fn put_field(&mut self, tag: u8, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.put(&[tag, bytes.len() as u8]);
            self.put(bytes);
        }
    }
}

/// Returns the encoded length of a string field, which is 0 when empty
/// because proto3 leaves empty strings out.
fn field_len(bytes: &[u8]) -> usize {
    if bytes.is_empty() {
        0
    } else {
        1 + encoded_len_varint(bytes.len() as u64) + bytes.len()
    }
}

fn put_field(out: &mut impl BufMut, tag: u8, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    out.put_u8(tag);
    encode_varint(bytes.len() as u64, out);
    out.put_slice(bytes);
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

    /// Renders `network` as its `Display` form does, such as
    /// "192.168.1.0/24". IPv4 is written digit by digit, without the
    /// formatting machinery.
    #[inline]
    pub(crate) fn network(network: &IpNetwork) -> StackText {
        let mut text = StackText::new();
        match network {
            IpNetwork::V4(v4) => {
                let [a, b, c, d] = v4.network_address().octets();
                text.push_decimal(a);
                for octet in [b, c, d] {
                    text.push(b'.');
                    text.push_decimal(octet);
                }
                text.push(b'/');
                text.push_decimal(v4.netmask());
            }
            IpNetwork::V6(_) => {
                write!(text, "{network}").expect("a prefix fits in MAX_NETWORK_TEXT bytes");
            }
        }
        text
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("only str fragments are written")
    }

    /// Returns the text as UTF-8 bytes, without checking them again.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    #[inline]
    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    #[inline]
    fn push_decimal(&mut self, value: u8) {
        if value >= 100 {
            self.push(b'0' + value / 100);
        }
        if value >= 10 {
            self.push(b'0' + value / 10 % 10);
        }
        self.push(b'0' + value % 10);
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
    use ip_network::{Ipv4Network, Ipv6Network};
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
[sets.shapes]
internal = true
networks = ["1.2.3.4/32", "12.34.56.0/22", "123.45.0.0/16", "200.0.0.0/5", "99.100.101.102/31", "::ffff:0:0/96"]
"#;
        let loaded = config::parse(text, "c.toml".as_ref(), &mut |_| unreachable!())
            .expect("test config is valid");
        Table::new(loaded.spec, 7)
    }

    /// Returns the response bytes that the generated types and prost write.
    fn reference_response(table: &Table, ips: &[&str]) -> Vec<u8> {
        IsInternalResponse {
            results: ips
                .iter()
                .map(|ip| to_proto(ip.to_string(), classify_text(table, ip)))
                .collect(),
            generation: table.generation(),
        }
        .encode_to_vec()
    }

    fn written_response(table: &Table, ips: &[&str]) -> (Vec<u8>, BatchTally) {
        let mut out = Vec::new();
        let mut tally = BatchTally::new(table);
        let bytes = ips.iter().map(|ip| ip.as_bytes());
        write_text_response(table, bytes, &mut tally, &mut out);
        (out, tally)
    }

    fn reference_tally(table: &Table, ips: &[&str]) -> BatchTally {
        let mut tally = BatchTally::new(table);
        for ip in ips {
            tally.add(&classify_text(table, ip));
        }
        tally
    }

    #[test]
    fn text_response_matches_prost_bytes() {
        let table = table();
        let long = "7".repeat(200);
        let ips = [
            long.as_str(),
            "10.1.2.3",
            " 10.9.1.1 ",
            "8.8.8.8",
            "0.0.0.0",
            "255.255.255.255",
            "1.2.3.4",
            "12.34.57.255",
            "123.45.6.7",
            "203.0.113.9",
            "99.100.101.103",
            "::ffff:192.168.1.9",
            "::ffff:0.0.0.0",
            "::ffff:8.8.8.8",
            "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ff01",
            "fd00::1%eth0",
            "fe80::1",
            "::",
            "",
            "10.1.2.3:80",
            "010.1.2.3",
            "1.2.3.256",
            "not an \"address\"\u{1}é",
            "1:2:3:4:5:6:7:8:9",
            "10.1.2.3%eth0",
        ];
        let (ours, tally) = written_response(&table, &ips);
        assert_eq!(ours, reference_response(&table, &ips));

        // The estimate covers batches of IPv4 addresses, matched or not.
        let ipv4 = &ips[1..11];
        let (ipv4_response, _) = written_response(&table, ipv4);
        let ipv4_request_len = ipv4.concat().len() + 2 * ipv4.len();
        let estimate = text_response_capacity(&table, ipv4_request_len, ipv4.len());
        assert!(ipv4_response.len() <= estimate, "{}", ipv4_response.len());
        assert_eq!(
            format!("{tally:?}"),
            format!("{:?}", reference_tally(&table, &ips))
        );
    }

    #[test]
    fn text_response_spans_lookup_blocks() {
        let table = table();
        let texts: Vec<String> = (0..LOOKUP_BLOCK * 2 + 3)
            .map(|n| match n % 5 {
                0 => format!("10.{}.{}.1", n % 256, n / 256),
                1 => format!("200.{}.0.{}", n % 8, n % 256),
                2 => format!("fd00::{n:x}"),
                3 => format!("bad{n}"),
                _ => format!("8.8.{}.{}", n / 256, n % 256),
            })
            .collect();
        let ips: Vec<&str> = texts.iter().map(String::as_str).collect();
        let (ours, tally) = written_response(&table, &ips);
        assert_eq!(ours, reference_response(&table, &ips));
        assert_eq!(
            format!("{tally:?}"),
            format!("{:?}", reference_tally(&table, &ips))
        );
    }

    #[test]
    fn text_response_classifies_invalid_utf8() {
        let table = table();
        let mut out = Vec::new();
        let mut tally = BatchTally::new(&table);
        write_text_response(&table, [&b"10.0.0.1\xff"[..]], &mut tally, &mut out);
        let response = IsInternalResponse::decode(out.as_slice()).unwrap();
        assert_eq!(response.results.len(), 1);
        assert_eq!(response.results[0].verdict, proto_verdict_invalid());
        assert!(response.results[0]
            .error
            .contains("bytes that are not UTF-8"));
    }

    fn proto_verdict_invalid() -> i32 {
        crate::proto::Verdict::Invalid.into()
    }

    #[test]
    fn empty_text_batch_encodes_generation_only() {
        let table = table();
        let (ours, _) = written_response(&table, &[]);
        assert_eq!(ours, reference_response(&table, &[]));
    }

    #[test]
    fn ipv4_network_text_matches_display() {
        let addresses = [
            "0.0.0.0",
            "1.2.3.4",
            "9.10.99.100",
            "10.99.100.255",
            "100.200.250.255",
            "255.255.255.255",
        ];
        for address in addresses {
            for len in 0..=32 {
                let network = Ipv4Network::new_truncate(address.parse().unwrap(), len).unwrap();
                let network = IpNetwork::V4(network);
                assert_eq!(StackText::network(&network).as_str(), network.to_string());
            }
        }
    }

    #[test]
    fn ipv6_network_text_matches_display() {
        let addresses = [
            "::",
            "fd00::1",
            "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff",
            "::ffff:192.168.1.1",
        ];
        for address in addresses {
            for len in [0, 1, 8, 48, 64, 96, 120, 127, 128] {
                let network = Ipv6Network::new_truncate(address.parse().unwrap(), len).unwrap();
                let network = IpNetwork::V6(network);
                assert_eq!(StackText::network(&network).as_str(), network.to_string());
            }
        }
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
            "1.2.3.4",
            "200.1.1.1",
        ];
        let bytes: Vec<u8> = ipv4
            .iter()
            .flat_map(|ip| ip.parse::<Ipv4Addr>().unwrap().octets())
            .collect();
        assert_packed_matches_text(&table, &ipv4, &bytes, classify_packed_ipv4);

        let ipv6 = ["fd00::1", "::ffff:10.1.2.3", "2001:db8::1", "::"];
        let bytes: Vec<u8> = ipv6
            .iter()
            .flat_map(|ip| ip.parse::<Ipv6Addr>().unwrap().octets())
            .collect();
        assert_packed_matches_text(&table, &ipv6, &bytes, classify_packed_ipv6);
    }

    /// Checks that `classify` gives `bytes`, the packed form of `ips`, the
    /// verdicts and tally of the text path.
    fn assert_packed_matches_text(
        table: &Table,
        ips: &[&str],
        bytes: &[u8],
        classify: fn(&Table, &[u8], &mut BatchTally) -> Vec<u8>,
    ) {
        let expected: Vec<u8> = ips
            .iter()
            .map(|ip| verdict_code(classify_text(table, ip).verdict))
            .collect();
        let mut tally = BatchTally::new(table);
        assert_eq!(classify(table, bytes, &mut tally), expected);
        assert_eq!(
            format!("{tally:?}"),
            format!("{:?}", reference_tally(table, ips))
        );
    }

    #[test]
    fn packed_ipv6_spans_lookup_blocks() {
        let table = table();
        let texts: Vec<String> = (0..LOOKUP_BLOCK * 3 + 1)
            .map(|n| match n % 7 {
                0 => format!("fd00::{n:x}"),
                1 => format!("::ffff:10.{}.0.{}", n % 11, n % 256),
                2 => format!("2001:db8::{n:x}"),
                3 => format!("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ff{:02x}", n % 256),
                4 => format!("::ffff:200.{}.1.1", n % 11),
                5 => "::".to_string(),
                _ => "::ffff:255.255.255.255".to_string(),
            })
            .collect();
        let ips: Vec<&str> = texts.iter().map(String::as_str).collect();
        let bytes: Vec<u8> = ips
            .iter()
            .flat_map(|ip| ip.parse::<Ipv6Addr>().unwrap().octets())
            .collect();
        assert_packed_matches_text(&table, &ips, &bytes, classify_packed_ipv6);
    }

    #[test]
    fn packed_ipv4_spans_lookup_blocks() {
        let table = table();
        let texts: Vec<String> = (0..LOOKUP_BLOCK * 3 + 1)
            .map(|n| format!("{}.{}.0.{}", [10, 200, 8, 1, 0][n % 5], n % 7, n % 256))
            .collect();
        let ips: Vec<&str> = texts.iter().map(String::as_str).collect();
        let bytes: Vec<u8> = ips
            .iter()
            .flat_map(|ip| ip.parse::<Ipv4Addr>().unwrap().octets())
            .collect();
        assert_packed_matches_text(&table, &ips, &bytes, classify_packed_ipv4);
    }
}
