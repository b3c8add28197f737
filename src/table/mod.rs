//! The longest-prefix-match table that classifies addresses.
//!
//! A [`Table`] is built whole from validated prefixes and never changes
//! afterwards, so a new config produces a new table. This module does not
//! depend on files, async code or APIs.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

mod compiled;

use ip_network::IpNetwork;

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

/// One prefix of the table, with its set and origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixEntry {
    pub network: IpNetwork,
    pub set: SetId,
    pub origin: Origin,
}

/// Everything a table is built from. The caller guarantees that networks are
/// unique and that every `set` and `origin.file` index is in range.
#[derive(Debug, Clone, Default)]
pub struct TableSpec {
    pub sets: Vec<SetInfo>,
    pub prefixes: Vec<PrefixEntry>,
    pub files: Vec<PathBuf>,
}

impl TableSpec {
    /// Counts the prefixes of each set as (IPv4, IPv6), indexed by [`SetId`].
    pub fn prefix_counts(&self) -> Vec<(u64, u64)> {
        let mut counts = vec![(0, 0); self.sets.len()];
        for entry in &self.prefixes {
            let count = &mut counts[usize::from(entry.set)];
            match entry.network {
                IpNetwork::V4(_) => count.0 += 1,
                IpNetwork::V6(_) => count.1 += 1,
            }
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
pub struct Match<'t> {
    pub verdict: Verdict,
    pub prefix: Option<&'t PrefixEntry>,
}

/// An immutable longest-prefix-match table over named sets.
///
/// Lookups use a [`CompiledTable`], which tests check against
/// `ip_network_table`; the compiled form looks up several times faster and
/// takes less memory.
pub struct Table {
    spec: TableSpec,
    compiled: CompiledTable,
    /// Set of each prefix, indexed like [`Table::prefixes`]. Batch lookups
    /// read these two bytes in place of the whole entry.
    prefix_sets: Box<[SetId]>,
    generation: u64,
}

impl Table {
    /// Builds the lookup structure from `spec`. `generation` identifies the
    /// table in every response it serves.
    pub fn new(spec: TableSpec, generation: u64) -> Table {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (index, entry) in spec.prefixes.iter().enumerate() {
            // The config rejects more than u32::MAX - 1 prefixes, and
            // u32::MAX is the compiled table's "no match".
            let index = u32::try_from(index).expect("prefix count is below u32::MAX");
            match entry.network {
                IpNetwork::V4(network) => v4.push((
                    u32::from(network.network_address()),
                    network.netmask(),
                    index,
                )),
                IpNetwork::V6(network) => v6.push((
                    u128::from(network.network_address()),
                    network.netmask(),
                    index,
                )),
            }
        }
        Table {
            compiled: CompiledTable::build(&v4, &v6),
            prefix_sets: spec.prefixes.iter().map(|entry| entry.set).collect(),
            spec,
            generation,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn sets(&self) -> &[SetInfo] {
        &self.spec.sets
    }

    pub fn prefixes(&self) -> &[PrefixEntry] {
        &self.spec.prefixes
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.spec.files
    }

    pub fn set(&self, id: SetId) -> &SetInfo {
        &self.spec.sets[usize::from(id)]
    }

    /// Returns the longest prefix that contains `address`.
    pub fn longest_match(&self, address: IpAddr) -> Option<&PrefixEntry> {
        let index = match address {
            IpAddr::V4(v4) => self.compiled.lookup_v4(u32::from(v4)),
            IpAddr::V6(v6) => self.compiled.lookup_v6(u128::from(v6)),
        }?;
        Some(&self.spec.prefixes[index as usize])
    }

    /// Returns the prefix at `index`, a value that [`CompiledTable`] lookups
    /// return.
    pub fn prefix(&self, index: u32) -> &PrefixEntry {
        &self.spec.prefixes[index as usize]
    }

    /// Returns the set of every prefix, indexed by the values that
    /// [`CompiledTable`] lookups return.
    pub fn prefix_sets(&self) -> &[SetId] {
        &self.prefix_sets
    }

    /// Returns the lookup structure, for callers that classify whole batches.
    pub fn compiled(&self) -> &CompiledTable {
        &self.compiled
    }

    /// Heap bytes of the lookup structure and the prefix list.
    pub fn memory_bytes(&self) -> usize {
        self.compiled.memory_bytes()
            + self.spec.prefixes.capacity() * std::mem::size_of::<PrefixEntry>()
            + self.prefix_sets.len() * std::mem::size_of::<SetId>()
    }

    /// Classifies an address that [`crate::address`] has normalized.
    pub fn classify(&self, address: Normalized) -> Match<'_> {
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
        self.spec.prefix_counts()
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("generation", &self.generation)
            .field("sets", &self.spec.sets.len())
            .field("prefixes", &self.spec.prefixes.len())
            .finish()
    }
}

#[cfg(test)]
mod tests;
