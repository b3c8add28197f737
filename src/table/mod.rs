//! The longest-prefix-match table that classifies addresses.
//!
//! A [`Table`] is built whole from validated prefixes and never changes
//! afterwards, so a new config produces a new table. This module does not
//! depend on files, async code or APIs.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

mod compiled;

use ip_network::{IpNetwork, Ipv4Network, Ipv6Network};

use compiled::radix_sort;
pub use compiled::CompiledTable;

use crate::address::Normalized;

/// Index of a set in [`Table::sets`].
pub type SetId = u16;

/// A named set of prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetInfo {
    pub name: String,
    pub internal: bool,
}

/// Location a prefix was written at: an index into [`Table::files`] and a 1-based
/// line number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub file: u32,
    pub line: u32,
}

/// One prefix of the table, with its set and origin. The table stores
/// prefixes in a packed form and returns this view by value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixEntry {
    pub network: IpNetwork,
    pub set: SetId,
    /// `None` in a table built with [`Table::without_origins`].
    pub origin: Option<Origin>,
}

/// A prefix as a [`TableSpec`] stores it while a config loads: 12 bytes for
/// IPv4 and 24 for IPv6, against 28 for a [`PrefixEntry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixRecord<A> {
    /// Network address with the host bits cleared: a `u32` for IPv4 or the
    /// 16 bytes of an IPv6 address, most significant first.
    pub address: A,
    /// Line of the prefix in [`TableSpec::position`] numbering.
    pub position: u32,
    pub set: SetId,
    pub length: u8,
}

pub type V4Record = PrefixRecord<u32>;
pub type V6Record = PrefixRecord<[u8; 16]>;

impl<A: Copy + Ord> PrefixRecord<A> {
    /// Sort key: a prefix sorts after every prefix that contains it.
    pub fn key(&self) -> (A, u8) {
        (self.address, self.length)
    }
}

impl V4Record {
    pub fn network(&self) -> IpNetwork {
        let address = Ipv4Addr::from(self.address);
        let network = Ipv4Network::new_truncate(address, self.length);
        IpNetwork::V4(network.expect("a stored IPv4 prefix length is at most 32"))
    }
}

impl V6Record {
    pub fn network(&self) -> IpNetwork {
        let address = Ipv6Addr::from(self.address);
        let network = Ipv6Network::new_truncate(address, self.length);
        IpNetwork::V6(network.expect("a stored IPv6 prefix length is at most 128"))
    }
}

/// Set and length of a matched prefix: 4 bytes. A lookup that finds the
/// prefix has the address, and masking it to `length` gives the network, so
/// prefixes of one set and length share one `PrefixInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixInfo {
    pub set: SetId,
    pub length: u8,
}

impl<A> From<&PrefixRecord<A>> for PrefixInfo {
    fn from(record: &PrefixRecord<A>) -> PrefixInfo {
        PrefixInfo {
            set: record.set,
            length: record.length,
        }
    }
}

/// Largest number of lines across the config and its list files, so that a
/// line position fits in a `u32` and the prefix count stays below
/// `u32::MAX`, which the compiled table reserves for "no match".
pub const MAX_LINES: u32 = u32::MAX - 1;

/// Largest number of prefixes of one address family, so that a trie stays
/// below the 2^31 words its references can address. An IPv6 /128 alone in
/// its range adds at most 20 nodes of 6 words and 3 leaf words each, under
/// 180 words, and 180 x 10M is below 2^31. By an estimate, full routing
/// tables hold about 1M IPv4 and 250k IPv6 prefixes.
pub const MAX_PREFIXES_PER_FAMILY: usize = 10_000_000;

/// Everything a table is built from. The caller guarantees that networks are
/// unique, that every `set` is in range and that every position lies in a
/// file added with [`TableSpec::add_file`].
#[derive(Debug, Clone, Default)]
pub struct TableSpec {
    pub sets: Vec<SetInfo>,
    pub v4: Vec<V4Record>,
    pub v6: Vec<V6Record>,
    files: Files,
}

/// Files that prefixes were read from, and the numbering of their lines.
#[derive(Debug, Clone, Default)]
struct Files {
    paths: Vec<PathBuf>,
    /// Position of line 1 of each file. Positions number the lines of all
    /// files in one sequence, so an origin takes 4 bytes instead of 8.
    starts: Vec<u32>,
    /// Lines of all files added so far.
    lines: u32,
}

impl Files {
    fn origin(&self, position: u32) -> Origin {
        let after = self.starts.partition_point(|&start| start <= position);
        let file = after
            .checked_sub(1)
            .expect("a position lies in an added file");
        Origin {
            file: file as u32,
            line: position - self.starts[file] + 1,
        }
    }
}

impl TableSpec {
    /// Adds a file of `lines` lines and returns its index in
    /// [`TableSpec::files`], or `None` when the lines of all files would
    /// pass [`MAX_LINES`].
    pub fn add_file(&mut self, path: PathBuf, lines: u32) -> Option<u32> {
        let files = &mut self.files;
        let end = files
            .lines
            .checked_add(lines)
            .filter(|&end| end <= MAX_LINES)?;
        let index = u32::try_from(files.paths.len()).ok()?;
        files.paths.push(path);
        files.starts.push(files.lines);
        files.lines = end;
        Some(index)
    }

    /// Files in the order they were added: the config, then list files.
    pub fn files(&self) -> &[PathBuf] {
        &self.files.paths
    }

    /// Position of `origin`, which must lie in a file added with
    /// [`TableSpec::add_file`].
    pub fn position(&self, origin: Origin) -> u32 {
        self.files.starts[origin.file as usize] + origin.line - 1
    }

    /// File and line of a position.
    pub fn origin(&self, position: u32) -> Origin {
        self.files.origin(position)
    }

    /// Appends one prefix, for callers that build a spec by hand.
    pub fn push(&mut self, network: IpNetwork, set: SetId, origin: Origin) {
        let position = self.position(origin);
        match network {
            IpNetwork::V4(v4) => self.v4.push(PrefixRecord {
                address: u32::from(v4.network_address()),
                position,
                set,
                length: v4.netmask(),
            }),
            IpNetwork::V6(v6) => self.v6.push(PrefixRecord {
                address: v6.network_address().octets(),
                position,
                set,
                length: v6.netmask(),
            }),
        }
    }

    pub fn prefix_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Returns prefix `index`: IPv4 prefixes come first, then IPv6.
    #[inline]
    pub fn prefix(&self, index: usize) -> PrefixEntry {
        let (network, set, position) = match self.v4.get(index) {
            Some(record) => (record.network(), record.set, record.position),
            None => {
                let record = &self.v6[index - self.v4.len()];
                (record.network(), record.set, record.position)
            }
        };
        PrefixEntry {
            network,
            set,
            origin: Some(self.origin(position)),
        }
    }

    /// Returns every prefix in index order.
    pub fn prefixes(&self) -> impl ExactSizeIterator<Item = PrefixEntry> + '_ {
        (0..self.prefix_count()).map(|index| self.prefix(index))
    }

    /// Sorts each family by address and length, which is the order
    /// [`Table::new`] needs. A list that is already sorted costs one scan.
    pub fn sort(&mut self) {
        if !self.v4.is_sorted_by_key(V4Record::key) {
            // Address and length fit 38 bits, so a radix sort beats comparisons.
            radix_sort(
                &mut self.v4,
                |r| u64::from(r.address) << 6 | u64::from(r.length),
                38,
            );
        }
        if !self.v6.is_sorted_by_key(V6Record::key) {
            self.v6.sort_unstable_by_key(V6Record::key);
        }
    }

    /// Counts the prefixes of each set as (IPv4, IPv6), indexed by [`SetId`].
    pub fn prefix_counts(&self) -> Vec<(u64, u64)> {
        let mut counts = vec![(0, 0); self.sets.len()];
        for record in &self.v4 {
            counts[usize::from(record.set)].0 += 1;
        }
        for record in &self.v6 {
            counts[usize::from(record.set)].1 += 1;
        }
        counts
    }
}

/// The classification of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Internal,
    External,
    Unknown,
    Invalid,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Internal => "internal",
            Verdict::External => "external",
            Verdict::Unknown => "unknown",
            Verdict::Invalid => "invalid",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verdict and the prefix that decided it, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub verdict: Verdict,
    pub prefix: Option<PrefixEntry>,
}

/// An immutable longest-prefix-match table over named sets.
///
/// Lookups use a [`CompiledTable`], which tests check against
/// `ip_network_table`; the compiled form looks up several times faster and
/// takes less memory.
///
/// The compiled table stores, for each prefix, the index of its
/// [`PrefixInfo`] in a list of the distinct (set, length) pairs, not the
/// prefix itself. That list is small at any table size, so it stays in
/// the cache, and runs of neighbouring prefixes with the same set and
/// length share leaves.
pub struct Table {
    sets: Vec<SetInfo>,
    files: Files,
    /// The distinct (set, length) pairs, indexed by the values that
    /// [`CompiledTable`] lookups return.
    infos: Vec<PrefixInfo>,
    /// Prefixes of each set as (IPv4, IPv6), indexed by [`SetId`].
    counts: Vec<(u64, u64)>,
    prefix_count: usize,
    /// Every prefix sorted by address and length, to find the file and line
    /// of a match. Empty once [`Table::without_origins`] dropped them.
    v4: Vec<V4Record>,
    v6: Vec<V6Record>,
    compiled: CompiledTable,
    generation: u64,
}

/// Number of prefix lengths that an IPv6 prefix can have, /0 to /128.
const LENGTHS: usize = 129;

/// Assigns each (set, length) pair that `spec` uses a dense index, in order
/// of first use. Returns the pairs and a map from `set * LENGTHS + length`
/// to the index.
fn prefix_infos(spec: &TableSpec) -> (Vec<PrefixInfo>, Vec<u32>) {
    let mut index = vec![u32::MAX; spec.sets.len() * LENGTHS];
    let mut infos = Vec::new();
    let used = (spec.v4.iter().map(PrefixInfo::from)).chain(spec.v6.iter().map(PrefixInfo::from));
    for info in used {
        let slot = &mut index[usize::from(info.set) * LENGTHS + usize::from(info.length)];
        if *slot == u32::MAX {
            *slot = u32::try_from(infos.len()).expect("at most 2^16 sets of 129 lengths");
            infos.push(info);
        }
    }
    (infos, index)
}

impl Table {
    /// Builds the lookup structure from `spec`. `generation` identifies the
    /// table in every response it serves.
    pub fn new(mut spec: TableSpec, generation: u64) -> Table {
        spec.sort();
        let (infos, index) = prefix_infos(&spec);
        let value =
            |set: SetId, length: u8| index[usize::from(set) * LENGTHS + usize::from(length)];
        let v4 = spec.v4.iter().map(|record| {
            (
                record.address,
                record.length,
                value(record.set, record.length),
            )
        });
        let v6 = spec.v6.iter().map(|record| {
            let address = u128::from_be_bytes(record.address);
            (address, record.length, value(record.set, record.length))
        });
        let compiled = CompiledTable::build_sorted(v4, v6);
        Table {
            counts: spec.prefix_counts(),
            prefix_count: spec.prefix_count(),
            sets: spec.sets,
            files: spec.files,
            infos,
            v4: spec.v4,
            v6: spec.v6,
            compiled,
            generation,
        }
    }

    /// Drops the prefix list that reports the file and line of a match, 12
    /// bytes per IPv4 and 24 per IPv6 prefix, for a caller that never
    /// reports them. [`PrefixEntry::origin`] is `None` afterwards.
    pub fn without_origins(mut self) -> Table {
        self.v4 = Vec::new();
        self.v6 = Vec::new();
        self
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn sets(&self) -> &[SetInfo] {
        &self.sets
    }

    pub fn prefix_count(&self) -> usize {
        self.prefix_count
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files.paths
    }

    pub fn set(&self, id: SetId) -> &SetInfo {
        &self.sets[usize::from(id)]
    }

    /// Returns the longest prefix that contains `address`.
    pub fn longest_match(&self, address: IpAddr) -> Option<PrefixEntry> {
        let index = match address {
            IpAddr::V4(v4) => self.compiled.lookup_v4(u32::from(v4))?,
            IpAddr::V6(v6) => self.compiled.lookup_v6(u128::from(v6))?,
        };
        Some(self.entry(index, address))
    }

    /// Returns the prefix that a [`CompiledTable`] lookup of `address`
    /// found as `value`, with its network rebuilt from `address`.
    pub fn entry(&self, value: u32, address: IpAddr) -> PrefixEntry {
        let info = self.prefix(value);
        let (network, position) = match address {
            IpAddr::V4(v4) => {
                let network = Ipv4Network::new_truncate(v4, info.length)
                    .expect("IPv4 lengths are at most 32");
                let key = (u32::from(network.network_address()), info.length);
                let position = find_record(&self.v4, key).map(|record| record.position);
                (IpNetwork::V4(network), position)
            }
            IpAddr::V6(v6) => {
                let network = Ipv6Network::new_truncate(v6, info.length)
                    .expect("IPv6 lengths are at most 128");
                let key = (network.network_address().octets(), info.length);
                let position = find_record(&self.v6, key).map(|record| record.position);
                (IpNetwork::V6(network), position)
            }
        };
        PrefixEntry {
            network,
            set: info.set,
            origin: position.map(|position| self.files.origin(position)),
        }
    }

    /// Returns the set and length of the prefix that a [`CompiledTable`]
    /// lookup found as `value`.
    #[inline]
    pub fn prefix(&self, value: u32) -> PrefixInfo {
        self.infos[value as usize]
    }

    /// Returns the distinct sets and lengths of the table's prefixes,
    /// indexed by the values that [`CompiledTable`] lookups return.
    pub fn prefixes(&self) -> &[PrefixInfo] {
        &self.infos
    }

    /// Returns the lookup structure, for callers that classify whole batches.
    pub fn compiled(&self) -> &CompiledTable {
        &self.compiled
    }

    /// Heap bytes of the lookup structure and the prefix lists.
    pub fn memory_bytes(&self) -> usize {
        self.compiled.memory_bytes()
            + self.infos.capacity() * size_of::<PrefixInfo>()
            + self.v4.capacity() * size_of::<V4Record>()
            + self.v6.capacity() * size_of::<V6Record>()
    }

    /// Classifies an address that [`crate::address`] has normalized.
    pub fn classify(&self, address: Normalized) -> Match {
        let address = match address {
            Normalized::Sentinel(_) => {
                return Match {
                    verdict: Verdict::Unknown,
                    prefix: None,
                }
            }
            Normalized::Lookup(address) => address,
        };
        match self.longest_match(address) {
            Some(entry) if self.set(entry.set).internal => Match {
                verdict: Verdict::Internal,
                prefix: Some(entry),
            },
            prefix => Match {
                verdict: Verdict::External,
                prefix,
            },
        }
    }

    /// Counts the prefixes of each set as (IPv4, IPv6), indexed by [`SetId`].
    pub fn prefix_counts(&self) -> Vec<(u64, u64)> {
        self.counts.clone()
    }
}

/// Finds the record of the prefix `key` in records sorted by
/// [`PrefixRecord::key`].
fn find_record<A: Copy + Ord>(
    records: &[PrefixRecord<A>],
    key: (A, u8),
) -> Option<&PrefixRecord<A>> {
    let index = records.binary_search_by_key(&key, PrefixRecord::key).ok()?;
    Some(&records[index])
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("generation", &self.generation)
            .field("sets", &self.sets.len())
            .field("prefixes", &self.prefix_count())
            .finish()
    }
}

#[cfg(test)]
mod tests;
