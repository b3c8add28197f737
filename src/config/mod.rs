//! Reads the TOML config and its list files into a validated [`TableSpec`].
//!
//! Every error and warning is collected with its file and line before the
//! config is accepted or rejected, so one run shows everything to fix. This
//! module reads files only through the function it is given; it does not
//! depend on the running service.

mod diagnostic;
mod lines;
mod prefix;

use std::borrow::Cow;
use std::collections::hash_map::{Entry, HashMap};
use std::fs;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ip_network::IpNetwork;
use sha2::{Digest, Sha256};
use toml::de::{DeArray, DeString, DeTable, DeValue};
use toml::Spanned;

pub use diagnostic::{more_warnings, ConfigErrors, Diagnostic, Location, Problem, MAX_DIAGNOSTICS};
pub use prefix::{parse_prefix, Adjustment, ParsedPrefix};

use crate::table::{
    Origin, PrefixRecord, SetId, SetInfo, TableSpec, MAX_LINES, MAX_PREFIXES_PER_FAMILY,
};
use diagnostic::{keep, keep_all};
use lines::{count_newlines, split_list, Parsed, Source};

const SET_KEYS: &str = "\"internal\", \"networks\", \"files\" and \"description\"";
const MAX_SET_NAME_LEN: usize = 64;

/// Largest config or list file that is read. A bound keeps a mistaken path
/// such as `/dev/zero` or a runaway generated file from filling memory.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// A config that passed validation.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub spec: TableSpec,
    pub warnings: Vec<Diagnostic>,
    /// Warnings found beyond the [`MAX_DIAGNOSTICS`] in `warnings`.
    pub omitted_warnings: usize,
    /// SHA-256 over the config text and every list file, hex encoded.
    pub content_hash: String,
    /// The config file followed by every list file it names.
    pub sources: Vec<PathBuf>,
}

/// Reads and validates the config at `path` and the list files it names.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    load_timing_reads(path).0
}

/// Runs [`load`] and also returns when its last file read ended, which for
/// a large list comes well before the parse ends.
pub fn load_timing_reads(path: &Path) -> (Result<Loaded, ConfigErrors>, Instant) {
    let text = match read_bounded(path) {
        Ok(text) => text,
        Err(error) => {
            let problem = read_problem(path.to_owned(), &error);
            // Text that is not UTF-8 has a line in the config itself.
            let line = match problem {
                Problem::NotUtf8 { line, .. } => u32::try_from(line).ok(),
                _ => None,
            };
            let errors = ConfigErrors {
                path: path.to_owned(),
                errors: vec![Diagnostic {
                    location: Location {
                        path: path.to_owned(),
                        line,
                    },
                    problem,
                }],
                omitted_errors: 0,
                warnings: Vec::new(),
                omitted_warnings: 0,
            };
            return (Err(errors), Instant::now());
        }
    };
    let mut last_read = Instant::now();
    let result = parse(&text, path, &mut |list| {
        let text = read_bounded(list);
        last_read = Instant::now();
        text
    });
    (result, last_read)
}

/// Reads a UTF-8 file of at most [`MAX_FILE_BYTES`] bytes. A larger file
/// fails with [`io::ErrorKind::FileTooLarge`], text that is not UTF-8 with
/// [`io::ErrorKind::InvalidData`] around a [`NotUtf8`], and
/// anything but a regular file (after symlinks) with
/// [`io::ErrorKind::InvalidInput`].
fn read_bounded(path: &Path) -> io::Result<String> {
    let file = open_regular(path)?;
    // Reserving the size up front saves copying a large file while the
    // buffer doubles. A file that grows meanwhile still reads whole.
    let size = file.metadata().map_or(0, |metadata| metadata.len());
    let mut bytes = Vec::with_capacity(size.min(MAX_FILE_BYTES) as usize + 1);
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("file is larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|error| {
        let offset = error.utf8_error().valid_up_to();
        let valid = &error.as_bytes()[..offset];
        let line = 1 + valid.iter().filter(|&&byte| byte == b'\n').count();
        io::Error::new(io::ErrorKind::InvalidData, NotUtf8 { offset, line })
    })
}

/// Error of [`read_bounded`] for text that is not UTF-8: where the first
/// invalid byte is.
#[derive(Debug, thiserror::Error)]
#[error("not valid UTF-8 at byte offset {offset}, line {line}")]
struct NotUtf8 {
    offset: usize,
    line: usize,
}

/// Opens `path` for reading if it is a regular file. The open does not
/// block, so a FIFO without a writer is rejected instead of stalling a
/// reload, and a device never reaches the read.
fn open_regular(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path)?;
    if file.metadata()?.is_file() {
        Ok(file)
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, NotRegularFile))
    }
}

/// Error of [`open_regular`] for a path that is not a regular file.
#[derive(Debug, thiserror::Error)]
#[error("not a regular file")]
struct NotRegularFile;

/// Describes a failed read of `path`, with advice that fits the cause.
fn read_problem(path: PathBuf, error: &io::Error) -> Problem {
    if let Some(&NotUtf8 { offset, line }) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<NotUtf8>())
    {
        return Problem::NotUtf8 { path, offset, line };
    }
    if error
        .get_ref()
        .is_some_and(|inner| inner.is::<NotRegularFile>())
    {
        return Problem::NotRegularFile { path };
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
    parse_with_limit(text, path, read_list, MAX_PREFIXES_PER_FAMILY)
}

/// Validates like [`parse`], with at most `max_prefixes` prefixes of each
/// address family.
fn parse_with_limit(
    text: &str,
    path: &Path,
    read_list: &mut dyn FnMut(&Path) -> io::Result<String>,
    max_prefixes: usize,
) -> Result<Loaded, ConfigErrors> {
    let mut reader = Reader::new(text, path, read_list, max_prefixes);
    match DeTable::parse_recoverable(text) {
        (_, syntax_errors) if !syntax_errors.is_empty() => {
            let mut reported = Vec::new();
            // Line of the header of a table defined twice. toml reports the
            // keys under it as duplicates too.
            let mut repeated_table: Option<u32> = None;
            for error in syntax_errors {
                let line = error.span().map(|span| reader.line_of(span));
                let mut message = error.message().trim_end().to_owned();
                // toml's message does not name the key, which its span covers.
                if let (Some(span), Some(line), "duplicate key") = (error.span(), line, &*message) {
                    let key = first_chars(text.get(span).unwrap_or_default(), 64);
                    let header = reader.line_text(line).trim();
                    if header.starts_with('[') {
                        repeated_table = Some(line);
                        message = format!(
                            "table `{}` appears twice; merge the two sections into one",
                            first_chars(header, 64)
                        );
                    } else if repeated_table.is_some_and(|table| reader.same_table(table, line)) {
                        continue;
                    } else {
                        message = format!(
                            "duplicate key `{key}`; each key may appear once in a table, so keep one of them"
                        );
                    }
                }
                if reported.contains(&(line, message.clone())) {
                    continue;
                }
                reported.push((line, message.clone()));
                reader.error_at_line(line, Problem::Syntax(message));
            }
        }
        (document, _) => reader.read_document(document.get_ref()),
    }
    reader.finish()
}

/// Returns the first `count` characters of `text`, marking a cut with "...".
fn first_chars(text: &str, count: usize) -> Cow<'_, str> {
    match text.char_indices().nth(count) {
        Some((end, _)) => Cow::Owned(format!("{}...", &text[..end])),
        None => Cow::Borrowed(text),
    }
}

/// State of one pass over a config and its list files.
struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
    line_starts: Vec<usize>,
    read_list: &'a mut dyn FnMut(&Path) -> io::Result<String>,
    spec: TableSpec,
    errors: Vec<Diagnostic>,
    omitted_errors: usize,
    warnings: Vec<Diagnostic>,
    omitted_warnings: usize,
    hasher: Sha256,
    /// Maximum number of prefixes of one address family.
    max_prefixes: usize,
    /// List files named so far, with the set and the place that named each.
    named_files: HashMap<PathBuf, (SetId, Range<usize>)>,
}

impl<'a> Reader<'a> {
    fn new(
        text: &'a str,
        path: &'a Path,
        read_list: &'a mut dyn FnMut(&Path) -> io::Result<String>,
        max_prefixes: usize,
    ) -> Reader<'a> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        let mut hasher = Sha256::new();
        hash_source(&mut hasher, path, text);
        let mut spec = TableSpec::default();
        let lines = count_newlines(text).saturating_add(1);
        let config_file = spec.add_file(path.to_owned(), lines);
        assert_eq!(
            config_file,
            Some(0),
            "a config has fewer than {MAX_LINES} lines"
        );
        Reader {
            path,
            text,
            line_starts,
            read_list,
            spec,
            errors: Vec::new(),
            omitted_errors: 0,
            warnings: Vec::new(),
            omitted_warnings: 0,
            hasher,
            max_prefixes,
            named_files: HashMap::new(),
        }
    }

    fn line_of(&self, span: Range<usize>) -> u32 {
        let start = span.start.min(self.text.len());
        let line = self.line_starts.partition_point(|&at| at <= start);
        u32::try_from(line).unwrap_or(u32::MAX)
    }

    /// Returns the text of line `line`, counted from 1.
    fn line_text(&self, line: u32) -> &str {
        let index = line as usize;
        let start = self
            .line_starts
            .get(index.wrapping_sub(1))
            .copied()
            .unwrap_or(0);
        let end = self
            .line_starts
            .get(index)
            .copied()
            .unwrap_or(self.text.len());
        self.text.get(start..end).unwrap_or_default()
    }

    /// Tells whether line `later` belongs to the table whose header is on
    /// line `header`: no other header comes between them.
    fn same_table(&self, header: u32, later: u32) -> bool {
        later > header
            && (header + 1..later).all(|line| !self.line_text(line).trim_start().starts_with('['))
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
        self.error(Diagnostic { location, problem });
    }

    fn error_at(&mut self, span: Range<usize>, problem: Problem) {
        let location = self.location(span);
        self.error(Diagnostic { location, problem });
    }

    fn error(&mut self, diagnostic: Diagnostic) {
        keep(&mut self.errors, &mut self.omitted_errors, diagnostic);
    }

    fn warning(&mut self, diagnostic: Diagnostic) {
        keep(&mut self.warnings, &mut self.omitted_warnings, diagnostic);
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

    /// Numbers the sets in name order, then reads their prefixes in file
    /// order, so that the first of two equal prefixes is the one written
    /// first.
    fn read_sets(&mut self, sets: &DeTable) {
        self.check_set_name_case(sets);
        let mut declared = Vec::new();
        for (name, value) in sets.iter() {
            let name_text = name.get_ref().as_ref();
            if !is_valid_set_name(name_text) {
                self.error_at(name.span(), Problem::InvalidSetName(name_text.to_owned()));
            }
            match value.get_ref() {
                DeValue::Table(body) => declared.extend(self.declare_set(name, body)),
                _ => self
                    .wrong_type(format!("set {name_text:?}"), "a table", value)
                    .unwrap_or(()),
            }
        }
        declared.sort_by_key(|set| set.name_span.start);
        for set in declared {
            self.read_set_prefixes(set);
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
            // Valid names are ASCII, and ASCII folding keeps an invalid one,
            // such as the Kelvin sign, from clashing with a valid one.
            match first_by_folded.entry(name_text.to_ascii_lowercase()) {
                Entry::Occupied(first) => {
                    let (other_name, other) = first.get().clone();
                    let problem = Problem::SetNameCaseClash {
                        name: name_text.to_owned(),
                        other_name: other_name.to_owned(),
                        other,
                    };
                    self.error(Diagnostic { location, problem });
                }
                Entry::Vacant(slot) => {
                    slot.insert((name_text, location));
                }
            }
        }
    }

    /// Checks the keys of a set and numbers it.
    fn declare_set<'d>(
        &mut self,
        name: &'d Spanned<DeString<'d>>,
        body: &'d DeTable<'d>,
    ) -> Option<DeclaredSet<'d>> {
        let name_span = name.span();
        let name: &str = name.get_ref().as_ref();
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

        let Ok(id) = SetId::try_from(self.spec.sets.len()) else {
            let max = u64::from(SetId::MAX) + 1;
            self.error_at(name_span, Problem::TooMany { what: "sets", max });
            return None;
        };
        self.spec.sets.push(SetInfo {
            name: name.to_owned(),
            internal: internal.unwrap_or(false),
        });
        Some(DeclaredSet {
            id,
            name_span,
            networks,
            files,
        })
    }

    fn read_set_prefixes(&mut self, set: DeclaredSet<'_>) {
        let before = self.spec.prefix_count();
        if let Some(items) = set.networks {
            self.read_networks(set.id, items);
        }
        if let Some(items) = set.files {
            self.read_files(set.id, items);
        }
        if self.spec.prefix_count() == before {
            let location = self.location(set.name_span);
            let problem = Problem::EmptySet(self.set_name(set.id).to_owned());
            self.warning(Diagnostic { location, problem });
        }
    }

    fn read_networks(&mut self, set: SetId, items: &DeArray) {
        let source = Source {
            path: self.path,
            set,
            first_position: 0,
        };
        let mut parsed = Parsed::default();
        for item in items.iter() {
            let line = self.line_of(item.span());
            match item.get_ref() {
                DeValue::String(text) => source.add(&mut parsed, text.trim_ascii(), line),
                _ => {
                    let what = format!("each entry of `networks` in set {:?}", self.set_name(set));
                    self.wrong_type(what, "a string", item).unwrap_or(())
                }
            }
        }
        self.absorb(parsed);
    }

    /// Moves parsed records and diagnostics into the config.
    fn absorb(&mut self, mut parsed: Parsed) {
        if self.spec.v4.is_empty() {
            std::mem::swap(&mut self.spec.v4, &mut parsed.v4);
        } else {
            self.spec.v4.append(&mut parsed.v4);
        }
        self.spec.v6.append(&mut parsed.v6);
        keep_all(
            &mut self.errors,
            &mut self.omitted_errors,
            parsed.errors,
            parsed.omitted_errors,
        );
        keep_all(
            &mut self.warnings,
            &mut self.omitted_warnings,
            parsed.warnings,
            parsed.omitted_warnings,
        );
    }

    fn read_files(&mut self, set: SetId, items: &DeArray) {
        for item in items.iter() {
            let DeValue::String(name) = item.get_ref() else {
                let what = format!("each entry of `files` in set {:?}", self.set_name(set));
                self.wrong_type(what, "a string", item).unwrap_or(());
                continue;
            };
            if name.is_empty() {
                let problem = Problem::EmptyFileName(self.set_name(set).to_owned());
                self.error_at(item.span(), problem);
                continue;
            }
            // Without `.` parts, `office.txt` and `./office.txt` are one file.
            let mut list_path: PathBuf = self
                .path
                .parent()
                .unwrap_or(Path::new(""))
                .join(name.as_ref())
                .components()
                .filter(|part| part != &std::path::Component::CurDir)
                .collect();
            if list_path.as_os_str().is_empty() {
                list_path = PathBuf::from(".");
            }
            if let Some((first_set, first_span)) = self.named_files.get(&list_path).cloned() {
                self.report_named_again(list_path, set, item.span(), first_set, first_span);
                continue;
            }
            self.named_files
                .insert(list_path.clone(), (set, item.span()));
            // Repeats are removed only at the end, so they count here too,
            // which bounds the memory that repeated lines can take.
            let read = self.spec.prefix_count();
            if read > self.max_prefixes.saturating_mul(2) {
                let problem = Problem::TooManyRecords {
                    path: list_path,
                    read: self.max_prefixes.saturating_mul(2),
                };
                self.error_at(item.span(), problem);
                continue;
            }
            match (self.read_list)(&list_path) {
                Ok(contents) => self.read_list_file(set, list_path, &contents, item.span()),
                Err(error) => self.error_at(item.span(), read_problem(list_path, &error)),
            }
        }
    }

    /// Reports the list file at `path`, named at `span` for `set`, as named
    /// before at `first_span` for `first_set`: a warning within one set, an
    /// error across sets.
    fn report_named_again(
        &mut self,
        path: PathBuf,
        set: SetId,
        span: Range<usize>,
        first_set: SetId,
        first_span: Range<usize>,
    ) {
        let location = self.location(span);
        let first = self.location(first_span);
        let set_name = self.set_name(set).to_owned();
        if first_set == set {
            let problem = Problem::RepeatedFile {
                path,
                set: set_name,
                first,
            };
            self.warning(Diagnostic { location, problem });
        } else {
            let problem = Problem::FileInTwoSets {
                path,
                set: set_name,
                other_set: self.set_name(first_set).to_owned(),
                other: first,
            };
            self.error(Diagnostic { location, problem });
        }
    }

    /// Reads one prefix a line; `#` starts a comment and blank lines are
    /// skipped. `span` is where the config names the file.
    fn read_list_file(
        &mut self,
        set: SetId,
        list_path: PathBuf,
        contents: &str,
        span: Range<usize>,
    ) {
        hash_source(&mut self.hasher, &list_path, contents);
        let contents = contents.strip_prefix('\u{feff}').unwrap_or(contents);
        let chunks = split_list(contents);
        let newlines: u32 = chunks.iter().map(|chunk| chunk.newlines).sum();
        let lines = newlines.saturating_add(1);
        let Some(file) = self.spec.add_file(list_path, lines) else {
            let max = u64::from(MAX_LINES);
            let what = "lines across the config and its list files";
            self.error_at(span, Problem::TooMany { what, max });
            return;
        };
        let source = Source {
            path: &self.spec.files()[file as usize],
            set,
            first_position: self.spec.position(Origin { file, line: 1 }),
        };
        let parsed = source.parse_list(&chunks);
        self.absorb(parsed);
    }

    /// Sorts the prefixes and drops every repeat, keeping the one written
    /// first. A repeat within one set is a warning, across sets an error.
    fn remove_duplicates(&mut self) {
        self.spec.sort();
        let mut v4 = std::mem::take(&mut self.spec.v4);
        remove_repeats(&mut v4, |repeat, first| {
            self.report_duplicate(repeat.network(), repeat, first)
        });
        self.spec.v4 = v4;
        let mut v6 = std::mem::take(&mut self.spec.v6);
        remove_repeats(&mut v6, |repeat, first| {
            self.report_duplicate(repeat.network(), repeat, first)
        });
        self.spec.v6 = v6;
    }

    /// Reports `network` at `repeat` as a repeat of the prefix kept at
    /// `first`.
    fn report_duplicate<A>(
        &mut self,
        network: IpNetwork,
        repeat: &PrefixRecord<A>,
        first: &PrefixRecord<A>,
    ) {
        // A list of repeats would otherwise build a message per line, only
        // to count it.
        let same_set = first.set == repeat.set;
        let (kept, omitted) = if same_set {
            (&self.warnings, &mut self.omitted_warnings)
        } else {
            (&self.errors, &mut self.omitted_errors)
        };
        if kept.len() >= MAX_DIAGNOSTICS {
            *omitted += 1;
            return;
        }
        let location = self.position_location(repeat.position);
        let first_location = self.position_location(first.position);
        let network = network.to_string();
        let set = self.set_name(repeat.set).to_owned();
        if same_set {
            let first = first_location;
            let problem = Problem::RepeatedInSet {
                network,
                set,
                first,
            };
            self.warning(Diagnostic { location, problem });
        } else {
            let other_set = self.set_name(first.set).to_owned();
            let other = first_location;
            let problem = Problem::DuplicatePrefix {
                network,
                set,
                other_set,
                other,
            };
            self.error(Diagnostic { location, problem });
        }
    }

    fn position_location(&self, position: u32) -> Location {
        let origin = self.spec.origin(position);
        Location {
            path: self.spec.files()[origin.file as usize].clone(),
            line: Some(origin.line),
        }
    }

    fn set_name(&self, set: SetId) -> &str {
        &self.spec.sets[usize::from(set)].name
    }

    fn finish(mut self) -> Result<Loaded, ConfigErrors> {
        self.remove_duplicates();
        if self.errors.is_empty() && self.spec.prefix_count() == 0 {
            self.error_at_line(None, Problem::NoPrefixes);
        }
        let max = self.max_prefixes;
        for (family, count) in [("IPv4", self.spec.v4.len()), ("IPv6", self.spec.v6.len())] {
            if count > max {
                self.error_at_line(None, Problem::TooManyPrefixes { family, count, max });
            }
        }
        sort_by_location(&mut self.warnings, self.spec.files());
        if !self.errors.is_empty() {
            // A set may be empty only because its prefixes were invalid,
            // so beside errors that warning would mislead.
            self.warnings
                .retain(|warning| !matches!(warning.problem, Problem::EmptySet(_)));
            sort_by_location(&mut self.errors, self.spec.files());
            return Err(ConfigErrors {
                path: self.path.to_owned(),
                errors: self.errors,
                omitted_errors: self.omitted_errors,
                warnings: self.warnings,
                omitted_warnings: self.omitted_warnings,
            });
        }
        let content_hash = hex(&self.hasher.finalize());
        Ok(Loaded {
            sources: self.spec.files().to_vec(),
            spec: self.spec,
            warnings: self.warnings,
            omitted_warnings: self.omitted_warnings,
            content_hash,
        })
    }
}

/// A set whose keys were checked, with the prefixes it names.
struct DeclaredSet<'d> {
    id: SetId,
    name_span: Range<usize>,
    networks: Option<&'d DeArray<'d>>,
    files: Option<&'d DeArray<'d>>,
}

/// Drops repeated prefixes from `records`, which are sorted by key. Of each
/// group of equal prefixes it keeps the one at the earliest position, and
/// calls `report(repeat, first)` for each of the others.
fn remove_repeats<A: Copy + Ord>(
    records: &mut Vec<PrefixRecord<A>>,
    mut report: impl FnMut(&PrefixRecord<A>, &PrefixRecord<A>),
) {
    let mut unique = 0;
    let mut start = 0;
    while start < records.len() {
        let key = records[start].key();
        let end = start
            + 1
            + records[start + 1..]
                .iter()
                .take_while(|record| record.key() == key)
                .count();
        let group = &records[start..end];
        // Two entries on one config line share a position, so the set
        // breaks the tie and the choice does not depend on the sort.
        let first = (0..group.len())
            .min_by_key(|&i| (group[i].position, group[i].set))
            .expect("a group has at least one record");
        for (i, repeat) in group.iter().enumerate() {
            if i != first {
                report(repeat, &group[first]);
            }
        }
        records[unique] = records[start + first];
        unique += 1;
        start = end;
    }
    records.truncate(unique);
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
