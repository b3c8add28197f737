//! Errors and warnings found while reading a config, each with its location.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// Limit on the errors, and separately on the warnings, that one pass over a
/// config keeps. The rest are only counted, so a list file of bad lines
/// cannot fill memory or a log line with messages.
pub const MAX_DIAGNOSTICS: usize = 100;

/// Appends `diagnostic` to `list`, or counts it in `omitted` once `list`
/// has [`MAX_DIAGNOSTICS`] entries.
pub(super) fn keep(list: &mut Vec<Diagnostic>, omitted: &mut usize, diagnostic: Diagnostic) {
    if list.len() < MAX_DIAGNOSTICS {
        list.push(diagnostic);
    } else {
        *omitted += 1;
    }
}

/// Moves `more`, of which `more_omitted` were already left out, into
/// `list` and `omitted` as [`keep`] does.
pub(super) fn keep_all(
    list: &mut Vec<Diagnostic>,
    omitted: &mut usize,
    more: Vec<Diagnostic>,
    more_omitted: usize,
) {
    *omitted += more_omitted;
    for diagnostic in more {
        keep(list, omitted, diagnostic);
    }
}

/// Describes the warnings that a config pass counted but did not keep, if
/// there are any.
pub fn more_warnings(omitted: usize) -> Option<String> {
    (omitted > 0).then(|| {
        format!("and {omitted} more warnings; fix the ones above and check the config again to see them")
    })
}

/// A file and, where known, the 1-based line in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub line: Option<u32>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// Something wrong in a config: an error rejects it, a warning does not
/// unless strict checking is on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Problem {
    #[error("cannot read {path}: {reason}; check that the file exists and is readable")]
    Unreadable { path: PathBuf, reason: String },
    #[error("cannot read {path}: line {line} is not valid UTF-8 (byte offset {offset}); save the file as UTF-8")]
    NotUtf8 {
        path: PathBuf,
        offset: usize,
        line: usize,
    },
    #[error("cannot read {path}: the file is larger than the {max_mib} MiB limit; split its prefixes across several list files under `files`")]
    TooLarge { path: PathBuf, max_mib: u64 },
    #[error("cannot read {path}: it is not a regular file but a folder, FIFO, socket or device; name a regular file")]
    NotRegularFile { path: PathBuf },
    #[error("invalid TOML: {0}")]
    Syntax(String),
    #[error("unknown key {key:?} {place}; allowed keys are {allowed}")]
    UnknownKey {
        key: String,
        place: String,
        allowed: &'static str,
    },
    #[error("{what} must be {expected}, found {found}")]
    WrongType {
        what: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("invalid set name {0:?}: use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit")]
    InvalidSetName(String),
    #[error("set name {name:?} differs only in case from set {other_name:?} at {other}; set names must differ in more than case, so rename one of them")]
    SetNameCaseClash {
        name: String,
        other_name: String,
        other: Location,
    },
    #[error("set {0:?} has no `internal` key; add `internal = true` or `internal = false`")]
    MissingInternal(String),
    #[error("invalid prefix {value:?}: {reason}")]
    InvalidPrefix { value: String, reason: String },
    #[error("prefix {network} is in set {set:?} and also in set {other_set:?} at {other}; a prefix belongs to one set only, so remove one of them")]
    DuplicatePrefix {
        network: String,
        set: String,
        other_set: String,
        other: Location,
    },
    #[error("no prefix in any set, so every address would be external; add networks or files under [sets.NAME]")]
    NoPrefixes,
    #[error("{count} {family} prefixes across all sets, but at most {max} are supported; merge adjacent prefixes or move some to a separate ipclass instance")]
    TooManyPrefixes {
        family: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{path}: more than {read} prefixes read before this file, counting repeats, so the rest are not read; remove repeated lines, or split the sets across ipclass instances")]
    TooManyRecords { path: PathBuf, read: usize },
    #[error("too many {what}: at most {max} are supported")]
    TooMany { what: &'static str, max: u64 },
    #[error("host bits are set in {written}; using {network}")]
    HostBitsSet { written: String, network: String },
    #[error("IPv4-mapped prefix {written} is used as {network}, because mapped addresses are looked up as IPv4")]
    MappedPrefix { written: String, network: String },
    #[error("host bits are set in IPv4-mapped prefix {written}; using {network}, because mapped addresses are looked up as IPv4")]
    MappedHostBitsSet { written: String, network: String },
    #[error(
        "prefix {network} appears again in set {set:?} (first at {first}); the repeat is ignored"
    )]
    RepeatedInSet {
        network: String,
        set: String,
        first: Location,
    },
    #[error("set {0:?} has no prefixes")]
    EmptySet(String),
    #[error("set {0:?} names an empty path in `files`; name a list file, relative to this config's folder")]
    EmptyFileName(String),
    #[error("list file {path} is named again in set {set:?} (first at {first}); it is read once, so remove the repeat")]
    RepeatedFile {
        path: PathBuf,
        set: String,
        first: Location,
    },
    #[error("list file {path} is named in set {set:?} and also in set {other_set:?} at {other}; a prefix belongs to one set only, so name the file in one set")]
    FileInTwoSets {
        path: PathBuf,
        set: String,
        other_set: String,
        other: Location,
    },
}

/// A problem and where it was found.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{location}: {problem}")]
pub struct Diagnostic {
    pub location: Location,
    pub problem: Problem,
}

/// Every error found in a config that was rejected, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct ConfigErrors {
    pub path: PathBuf,
    pub errors: Vec<Diagnostic>,
    /// Errors found beyond the [`MAX_DIAGNOSTICS`] in `errors`.
    pub omitted_errors: usize,
    /// Warnings found in the same pass, in file order. The display leaves
    /// them out, so that a failed reload logs only what made it fail.
    pub warnings: Vec<Diagnostic>,
    /// Warnings found beyond the [`MAX_DIAGNOSTICS`] in `warnings`.
    pub omitted_warnings: usize,
}

impl ConfigErrors {
    /// Returns the errors as the display does, but with no text taken from
    /// the files: API clients see this form, and a file named by mistake may
    /// contain secrets. The log and `ipclass check` show the full form.
    pub fn without_file_text(&self) -> String {
        let mut text = String::new();
        let _ = self.write(&mut text, true);
        text
    }

    fn write(&self, out: &mut impl fmt::Write, without_file_text: bool) -> fmt::Result {
        let count = self.errors.len() + self.omitted_errors;
        let noun = if count == 1 { "error" } else { "errors" };
        write!(
            out,
            "invalid config {} ({count} {noun})",
            self.path.display()
        )?;
        for error in &self.errors {
            let location = &error.location;
            match &error.problem {
                Problem::InvalidPrefix { .. } if without_file_text => write!(
                    out,
                    "\n  {location}: invalid prefix; the server log and `ipclass check` show it"
                )?,
                Problem::Syntax(_) if without_file_text => write!(
                    out,
                    "\n  {location}: invalid TOML; the server log and `ipclass check` show the cause"
                )?,
                _ => write!(out, "\n  {error}")?,
            }
        }
        if self.omitted_errors > 0 {
            write!(
                out,
                "\n  and {} more errors; fix the ones above and check the config again to see them",
                self.omitted_errors
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, false)
    }
}
