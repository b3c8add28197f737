//! Reads the TOML config and its list files into a validated [`TableSpec`].
//!
//! Every error and warning is collected with its file and line before the
//! config is accepted or rejected, so one run shows everything to fix. This
//! module reads files only through the function it is given; it does not
//! depend on the running service.

mod diagnostic;
mod prefix;

use std::collections::hash_map::{Entry, HashMap};
use std::fs;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};

use ip_network::IpNetwork;
use rustc_hash::FxBuildHasher;
use sha2::{Digest, Sha256};
use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

pub use diagnostic::{ConfigErrors, Diagnostic, Location, Problem};
pub use prefix::{parse_prefix, Adjustment, ParsedPrefix};

use crate::table::{Origin, PrefixEntry, SetId, SetInfo, TableSpec};

const SET_KEYS: &str = "\"internal\", \"networks\", \"files\" and \"description\"";
const MAX_SET_NAME_LEN: usize = 64;

/// Characters of an invalid prefix that an error repeats. The longest prefix
/// text, IPv6 with an embedded IPv4 address and `/128`, has 49 characters.
const MAX_PREFIX_ECHO: usize = 64;

/// Largest config or list file that is read. A bound keeps a mistaken path
/// such as `/dev/zero` or a runaway generated file from filling memory.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// A config that passed validation.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub spec: TableSpec,
    pub warnings: Vec<Diagnostic>,
    /// SHA-256 over the config text and every list file, hex encoded.
    pub content_hash: String,
    /// The config file followed by every list file it names.
    pub sources: Vec<PathBuf>,
}

/// Reads and validates the config at `path` and the list files it names.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let text = read_bounded(path).map_err(|error| ConfigErrors {
        path: path.to_owned(),
        errors: vec![Diagnostic {
            location: Location {
                path: path.to_owned(),
                line: None,
            },
            problem: read_problem(path.to_owned(), &error),
        }],
    })?;
    parse(&text, path, &mut |list| read_bounded(list))
}

/// Reads a UTF-8 file of at most [`MAX_FILE_BYTES`] bytes. A larger file
/// fails with [`io::ErrorKind::FileTooLarge`], and text that is not UTF-8
/// with [`io::ErrorKind::InvalidData`] around a [`std::str::Utf8Error`].
fn read_bounded(path: &Path) -> io::Result<String> {
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("file is larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.utf8_error()))
}

/// Describes a failed read of `path`, with advice that fits the cause.
fn read_problem(path: PathBuf, error: &io::Error) -> Problem {
    let utf8_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<std::str::Utf8Error>());
    if let Some(utf8_error) = utf8_error {
        let offset = utf8_error.valid_up_to();
        return Problem::NotUtf8 { path, offset };
    }
    if error.kind() == io::ErrorKind::FileTooLarge {
        let max_mib = MAX_FILE_BYTES / (1024 * 1024);
        return Problem::TooLarge { path, max_mib };
    }
    let reason = error.to_string();
    Problem::Unreadable { path, reason }
}

/// Hashes the files at `sources` as [`Loaded::content_hash`] does, so a
/// caller can tell whether the files changed since a load without parsing
/// them again. `sources` is [`Loaded::sources`].
pub fn hash_sources(sources: &[PathBuf]) -> io::Result<String> {
    let mut hasher = Sha256::new();
    for path in sources {
        hash_source(&mut hasher, path, &read_bounded(path)?);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Validates config `text` that was read from `path`. List files are read
/// with `read_list`, relative to the folder of `path`.
pub fn parse(
    text: &str,
    path: &Path,
    read_list: &mut dyn FnMut(&Path) -> io::Result<String>,
) -> Result<Loaded, ConfigErrors> {
    let mut reader = Reader::new(text, path, read_list);
    match DeTable::parse_recoverable(text) {
        (_, syntax_errors) if !syntax_errors.is_empty() => {
            for error in syntax_errors {
                let line = error.span().map(|span| reader.line_of(span));
                let message = error.message().trim_end().to_owned();
                reader.error_at_line(line, Problem::Syntax(message));
            }
        }
        (document, _) => reader.read_document(document.get_ref()),
    }
    reader.finish()
}

/// State of one pass over a config and its list files.
struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
    line_starts: Vec<usize>,
    read_list: &'a mut dyn FnMut(&Path) -> io::Result<String>,
    spec: TableSpec,
    /// Every accepted prefix, with its index in `spec.prefixes`.
    seen: SeenPrefixes,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    hasher: Sha256,
}

impl<'a> Reader<'a> {
    fn new(
        text: &'a str,
        path: &'a Path,
        read_list: &'a mut dyn FnMut(&Path) -> io::Result<String>,
    ) -> Reader<'a> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        let mut hasher = Sha256::new();
        hash_source(&mut hasher, path, text);
        Reader {
            path,
            text,
            line_starts,
            read_list,
            spec: TableSpec {
                files: vec![path.to_owned()],
                ..TableSpec::default()
            },
            seen: SeenPrefixes::default(),
            errors: Vec::new(),
            warnings: Vec::new(),
            hasher,
        }
    }

    fn line_of(&self, span: Range<usize>) -> u32 {
        let start = span.start.min(self.text.len());
        let line = self.line_starts.partition_point(|&at| at <= start);
        u32::try_from(line).unwrap_or(u32::MAX)
    }

    fn location(&self, span: Range<usize>) -> Location {
        Location {
            path: self.path.to_owned(),
            line: Some(self.line_of(span)),
        }
    }

    fn error_at_line(&mut self, line: Option<u32>, problem: Problem) {
        let location = Location {
            path: self.path.to_owned(),
            line,
        };
        self.errors.push(Diagnostic { location, problem });
    }

    fn error_at(&mut self, span: Range<usize>, problem: Problem) {
        let location = self.location(span);
        self.errors.push(Diagnostic { location, problem });
    }

    fn wrong_type<T>(
        &mut self,
        what: String,
        expected: &'static str,
        value: &Spanned<DeValue>,
    ) -> Option<T> {
        let found = value.get_ref().type_str();
        self.error_at(
            value.span(),
            Problem::WrongType {
                what,
                expected,
                found,
            },
        );
        None
    }

    fn read_document(&mut self, root: &DeTable) {
        for (key, value) in root.iter() {
            match (key.get_ref().as_ref(), value.get_ref()) {
                ("sets", DeValue::Table(sets)) => self.read_sets(sets),
                ("sets", _) => self
                    .wrong_type("`sets`".into(), "a table", value)
                    .unwrap_or(()),
                (other, _) => self.error_at(
                    key.span(),
                    Problem::UnknownKey {
                        key: other.to_owned(),
                        place: "at the top level".into(),
                        allowed: "\"sets\"",
                    },
                ),
            }
        }
    }

    fn read_sets(&mut self, sets: &DeTable) {
        self.check_set_name_case(sets);
        for (name, value) in sets.iter() {
            let name_text = name.get_ref().as_ref();
            if !is_valid_set_name(name_text) {
                self.error_at(name.span(), Problem::InvalidSetName(name_text.to_owned()));
            }
            match value.get_ref() {
                DeValue::Table(body) => self.read_set(name_text, name.span(), body),
                _ => self
                    .wrong_type(format!("set {name_text:?}"), "a table", value)
                    .unwrap_or(()),
            }
        }
    }

    /// Rejects set names that differ only in case, at the later of the two.
    fn check_set_name_case(&mut self, sets: &DeTable) {
        // The table iterates in key order, so sort the names into file order.
        let mut names: Vec<_> = sets.keys().collect();
        names.sort_by_key(|name| name.span().start);
        let mut first_by_folded: HashMap<String, (&str, Location)> = HashMap::new();
        for name in names {
            let name_text: &str = name.get_ref().as_ref();
            let location = self.location(name.span());
            match first_by_folded.entry(name_text.to_lowercase()) {
                Entry::Occupied(first) => {
                    let (other_name, other) = first.get().clone();
                    let problem = Problem::SetNameCaseClash {
                        name: name_text.to_owned(),
                        other_name: other_name.to_owned(),
                        other,
                    };
                    self.errors.push(Diagnostic { location, problem });
                }
                Entry::Vacant(slot) => {
                    slot.insert((name_text, location));
                }
            }
        }
    }

    fn read_set(&mut self, name: &str, name_span: Range<usize>, body: &DeTable) {
        let mut internal = None;
        let mut has_internal_key = false;
        let mut networks = None;
        let mut files = None;
        for (key, value) in body.iter() {
            let key_text = key.get_ref().as_ref();
            let what = format!("`{key_text}` in set {name:?}");
            match (key_text, value.get_ref()) {
                ("internal", DeValue::Boolean(flag)) => {
                    has_internal_key = true;
                    internal = Some(*flag);
                }
                ("internal", _) => {
                    // Reported as a wrong type only, not also as missing.
                    has_internal_key = true;
                    self.wrong_type(what, "true or false", value).unwrap_or(())
                }
                ("networks", DeValue::Array(items)) => networks = Some(items),
                ("files", DeValue::Array(items)) => files = Some(items),
                ("networks" | "files", _) => self
                    .wrong_type(what, "an array of strings", value)
                    .unwrap_or(()),
                ("description", DeValue::String(_)) => {}
                ("description", _) => self.wrong_type(what, "a string", value).unwrap_or(()),
                (other, _) => self.error_at(
                    key.span(),
                    Problem::UnknownKey {
                        key: other.to_owned(),
                        place: format!("in set {name:?}"),
                        allowed: SET_KEYS,
                    },
                ),
            }
        }
        if !has_internal_key {
            self.error_at(name_span.clone(), Problem::MissingInternal(name.to_owned()));
        }

        let Ok(set) = SetId::try_from(self.spec.sets.len()) else {
            let max = u64::from(SetId::MAX) + 1;
            self.error_at(name_span, Problem::TooMany { what: "sets", max });
            return;
        };
        self.spec.sets.push(SetInfo {
            name: name.to_owned(),
            internal: internal.unwrap_or(false),
        });
        let before = self.spec.prefixes.len();
        if let Some(items) = networks {
            self.read_networks(set, items);
        }
        if let Some(items) = files {
            self.read_files(set, items);
        }
        if self.spec.prefixes.len() == before {
            let location = self.location(name_span);
            let problem = Problem::EmptySet(name.to_owned());
            self.warnings.push(Diagnostic { location, problem });
        }
    }

    fn read_networks(&mut self, set: SetId, items: &DeArray) {
        for item in items.iter() {
            let line = self.line_of(item.span());
            match item.get_ref() {
                DeValue::String(text) => self.add_prefix(set, text.trim_ascii(), 0, line),
                _ => {
                    let what = format!("each entry of `networks` in set {:?}", self.set_name(set));
                    self.wrong_type(what, "a string", item).unwrap_or(())
                }
            }
        }
    }

    fn read_files(&mut self, set: SetId, items: &DeArray) {
        for item in items.iter() {
            let DeValue::String(name) = item.get_ref() else {
                let what = format!("each entry of `files` in set {:?}", self.set_name(set));
                self.wrong_type(what, "a string", item).unwrap_or(());
                continue;
            };
            let list_path = self
                .path
                .parent()
                .unwrap_or(Path::new(""))
                .join(name.as_ref());
            match (self.read_list)(&list_path) {
                Ok(contents) => self.read_list_file(set, list_path, &contents),
                Err(error) => self.error_at(item.span(), read_problem(list_path, &error)),
            }
        }
    }

    /// Reads one prefix a line; `#` starts a comment and blank lines are skipped.
    fn read_list_file(&mut self, set: SetId, list_path: PathBuf, contents: &str) {
        hash_source(&mut self.hasher, &list_path, contents);
        let file = u32::try_from(self.spec.files.len()).unwrap_or(u32::MAX);
        self.spec.files.push(list_path);
        let contents = contents.strip_prefix('\u{feff}').unwrap_or(contents);
        // A line count bounds the prefixes to come, so neither the prefix
        // list nor the duplicate index grows by doubling past its need.
        let lines = contents.bytes().filter(|&b| b == b'\n').count() + 1;
        self.spec.prefixes.reserve(lines);
        self.seen.reserve(lines);
        for (index, raw_line) in contents.lines().enumerate() {
            let text = match raw_line.split_once('#') {
                Some((text, _comment)) => text,
                None => raw_line,
            };
            let text = text.trim_ascii();
            if !text.is_empty() {
                let line = u32::try_from(index + 1).unwrap_or(u32::MAX);
                self.add_prefix(set, text, file, line);
            }
        }
    }

    fn add_prefix(&mut self, set: SetId, text: &str, file: u32, line: u32) {
        // Only text longer than MAX_PREFIX_ECHO bytes can hold more than
        // MAX_PREFIX_ECHO characters, so short lines skip the scan.
        let long_text = (text.len() > MAX_PREFIX_ECHO)
            .then(|| text.char_indices().nth(MAX_PREFIX_ECHO))
            .flatten();
        if let Some((end, _)) = long_text {
            let location = self.file_location(file, line);
            let problem = Problem::InvalidPrefix {
                value: format!("{}...", &text[..end]),
                reason: format!(
                    "text of {} bytes is too long for a prefix; write one prefix a line",
                    text.len()
                ),
            };
            self.errors.push(Diagnostic { location, problem });
            return;
        }
        let parsed = match parse_prefix(text) {
            Ok(parsed) => parsed,
            Err(reason) => {
                let location = self.file_location(file, line);
                let problem = Problem::InvalidPrefix {
                    value: text.to_owned(),
                    reason,
                };
                self.errors.push(Diagnostic { location, problem });
                return;
            }
        };
        let network = parsed.network;
        if parsed.adjustment.is_some() {
            self.warn_adjusted(text, parsed, file, line);
        }

        if let Some(index) = self.seen.get(network) {
            self.report_duplicate(network, set, index, file, line);
            return;
        }

        // u32::MAX is reserved: the compiled table uses it for "no match".
        let Some(index) = u32::try_from(self.spec.prefixes.len())
            .ok()
            .filter(|&i| i < u32::MAX)
        else {
            let max = u64::from(u32::MAX);
            self.errors.push(Diagnostic {
                location: self.file_location(file, line),
                problem: Problem::TooMany {
                    what: "prefixes",
                    max,
                },
            });
            return;
        };
        self.seen.insert(network, index);
        self.spec.prefixes.push(PrefixEntry {
            network,
            set,
            origin: Origin { file, line },
        });
    }

    fn warn_adjusted(&mut self, text: &str, parsed: ParsedPrefix, file: u32, line: u32) {
        let location = self.file_location(file, line);
        let network = parsed.network;
        match parsed.adjustment {
            Some(Adjustment::HostBitsCleared) => self.warn(
                &location,
                Problem::HostBitsSet {
                    written: text.to_owned(),
                    network: network.to_string(),
                },
            ),
            Some(Adjustment::MappedToIpv4) => self.warn(
                &location,
                Problem::MappedPrefix {
                    written: text.to_owned(),
                    network: network.to_string(),
                },
            ),
            None => {}
        }
    }

    /// Reports `network` at `file:line` as a repeat of the accepted prefix
    /// at `index`: a warning within one set, an error across sets.
    fn report_duplicate(
        &mut self,
        network: IpNetwork,
        set: SetId,
        index: u32,
        file: u32,
        line: u32,
    ) {
        let location = self.file_location(file, line);
        let first = &self.spec.prefixes[index as usize];
        let first_location = self.file_location(first.origin.file, first.origin.line);
        let first_set = first.set;
        let problem = if first_set == set {
            Problem::RepeatedInSet {
                network: network.to_string(),
                set: self.set_name(set).to_owned(),
                first: first_location,
            }
        } else {
            Problem::DuplicatePrefix {
                network: network.to_string(),
                set: self.set_name(set).to_owned(),
                other_set: self.set_name(first_set).to_owned(),
                other: first_location,
            }
        };
        if first_set == set {
            self.warnings.push(Diagnostic { location, problem });
        } else {
            self.errors.push(Diagnostic { location, problem });
        }
    }

    fn warn(&mut self, location: &Location, problem: Problem) {
        self.warnings.push(Diagnostic {
            location: location.clone(),
            problem,
        });
    }

    fn file_location(&self, file: u32, line: u32) -> Location {
        Location {
            path: self.spec.files[file as usize].clone(),
            line: Some(line),
        }
    }

    fn set_name(&self, set: SetId) -> &str {
        &self.spec.sets[usize::from(set)].name
    }

    fn finish(mut self) -> Result<Loaded, ConfigErrors> {
        if self.errors.is_empty() && self.spec.prefixes.is_empty() {
            self.error_at_line(None, Problem::NoPrefixes);
        }
        if !self.errors.is_empty() {
            sort_by_location(&mut self.errors, &self.spec.files);
            return Err(ConfigErrors {
                path: self.path.to_owned(),
                errors: self.errors,
            });
        }
        sort_by_location(&mut self.warnings, &self.spec.files);
        self.spec.prefixes.shrink_to_fit();
        let content_hash = hex(&self.hasher.finalize());
        Ok(Loaded {
            sources: self.spec.files.clone(),
            spec: self.spec,
            warnings: self.warnings,
            content_hash,
        })
    }
}

/// Index of accepted prefixes for finding duplicates, keyed by address and
/// length.
///
/// A hash map replaces `ip_network_table`, which the config was validated
/// into before. On a list of 1.1 million prefixes its inserts, lookups and
/// the drop of its nodes took about 40% of `check`'s run time in a `perf`
/// profile, yet duplicate detection needs exact matches only. FxHash does not resist chosen collisions, which
/// is acceptable because the config is the operator's own input.
#[derive(Default)]
struct SeenPrefixes {
    /// Key: the address shifted left by 8 bits, ORed with the length.
    v4: HashMap<u64, u32, FxBuildHasher>,
    v6: HashMap<(u128, u8), u32, FxBuildHasher>,
}

impl SeenPrefixes {
    fn reserve(&mut self, additional: usize) {
        self.v4.reserve(additional);
    }

    fn get(&self, network: IpNetwork) -> Option<u32> {
        match network {
            IpNetwork::V4(v4) => self.v4.get(&v4_key(v4)).copied(),
            IpNetwork::V6(v6) => self.v6.get(&v6_key(v6)).copied(),
        }
    }

    fn insert(&mut self, network: IpNetwork, index: u32) {
        match network {
            IpNetwork::V4(v4) => self.v4.insert(v4_key(v4), index),
            IpNetwork::V6(v6) => self.v6.insert(v6_key(v6), index),
        };
    }
}

fn v4_key(network: ip_network::Ipv4Network) -> u64 {
    u64::from(u32::from(network.network_address())) << 8 | u64::from(network.netmask())
}

fn v6_key(network: ip_network::Ipv6Network) -> (u128, u8) {
    (u128::from(network.network_address()), network.netmask())
}

/// Feeds a file's path and contents to the content hash, framed so that no
/// two different sequences of files hash alike.
fn hash_source(hasher: &mut Sha256, path: &Path, contents: &str) {
    let path = path.to_string_lossy();
    hasher.update((path.len() as u64).to_le_bytes());
    hasher.update(path.as_bytes());
    hasher.update((contents.len() as u64).to_le_bytes());
    hasher.update(contents.as_bytes());
}

/// Orders diagnostics by file, in the order the files were read, then line.
fn sort_by_location(diagnostics: &mut [Diagnostic], files: &[PathBuf]) {
    diagnostics.sort_by_key(|diagnostic| {
        let file = files
            .iter()
            .position(|path| *path == diagnostic.location.path)
            .unwrap_or(files.len());
        (file, diagnostic.location.line)
    });
}

fn is_valid_set_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    first_ok
        && name.len() <= MAX_SET_NAME_LEN
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests;
