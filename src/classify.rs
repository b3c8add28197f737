//! The classification that every API shares: address text or raw address
//! in, verdict with the matched set and prefix out.
//!
//! gRPC and HTTP differ only in how they encode what this module returns.

use std::net::IpAddr;

use crate::address::{self, AddressError};
use crate::table::{Match, PrefixEntry, SetInfo, Table, Verdict};

/// The outcome for one address of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification<'t> {
    pub verdict: Verdict,
    pub set: Option<&'t SetInfo>,
    pub prefix: Option<PrefixEntry>,
    pub error: Option<AddressError>,
}

impl<'t> Classification<'t> {
    fn from_match(table: &'t Table, found: Match) -> Classification<'t> {
        Classification {
            verdict: found.verdict,
            set: found.prefix.map(|entry| table.set(entry.set)),
            prefix: found.prefix,
            error: None,
        }
    }

    pub fn is_internal(&self) -> bool {
        self.verdict == Verdict::Internal
    }
}

/// Classifies address text such as `"192.168.1.10"` or `" fe80::1%eth0"`.
/// Text that does not parse is [`Verdict::Invalid`], never internal.
pub fn classify_text<'t>(table: &'t Table, text: &str) -> Classification<'t> {
    match address::parse(text) {
        Ok(normalized) => Classification::from_match(table, table.classify(normalized)),
        Err(error) => Classification {
            verdict: Verdict::Invalid,
            set: None,
            prefix: None,
            error: Some(error),
        },
    }
}

/// Classifies an address that arrived in binary form.
pub fn classify_address(table: &Table, address: IpAddr) -> Classification<'_> {
    Classification::from_match(table, table.classify(address::normalize(address)))
}
