//! Turns prefix lines into packed records and diagnostics.
//!
//! A large list file is split into chunks at line ends, and each chunk is
//! parsed on its own thread. Duplicates across lines are left to the caller,
//! which receives every chunk.

use std::path::Path;

use ip_network::IpNetwork;

use super::diagnostic::{keep, keep_all, Diagnostic, Location, Problem, MAX_DIAGNOSTICS};
use super::prefix::{parse_prefix, Adjustment, ParsedPrefix};
use crate::table::{PrefixRecord, SetId, V4Record, V6Record};

/// Characters of an invalid prefix that an error repeats. The longest prefix
/// text, IPv6 with an embedded IPv4 address and `/128`, has 49 characters.
const MAX_PREFIX_ECHO: usize = 64;

/// List files smaller than this are parsed on the calling thread, because
/// starting threads would cost more than it saves.
const MIN_PARALLEL_BYTES: usize = 1 << 20;

/// Upper bound on parse threads per list file.
const MAX_THREADS: usize = 8;

/// Records and diagnostics parsed from some lines of one file.
#[derive(Debug, Default)]
pub(super) struct Parsed {
    pub v4: Vec<V4Record>,
    pub v6: Vec<V6Record>,
    pub errors: Vec<Diagnostic>,
    pub omitted_errors: usize,
    pub warnings: Vec<Diagnostic>,
    pub omitted_warnings: usize,
}

impl Parsed {
    fn with_capacity(lines: usize) -> Parsed {
        Parsed {
            v4: Vec::with_capacity(lines),
            ..Parsed::default()
        }
    }

    /// Moves the contents of `other` to the end of `self`.
    pub fn append(&mut self, mut other: Parsed) {
        if self.v4.is_empty() {
            std::mem::swap(&mut self.v4, &mut other.v4);
        } else {
            self.v4.append(&mut other.v4);
        }
        self.v6.append(&mut other.v6);
        keep_all(
            &mut self.errors,
            &mut self.omitted_errors,
            other.errors,
            other.omitted_errors,
        );
        keep_all(
            &mut self.warnings,
            &mut self.omitted_warnings,
            other.warnings,
            other.omitted_warnings,
        );
    }

    /// Keeps an error at `line` unless [`MAX_DIAGNOSTICS`] are kept already,
    /// and builds its message only if it is kept.
    fn error(&mut self, source: &Source<'_>, line: u32, problem: impl FnOnce() -> Problem) {
        if self.errors.len() < MAX_DIAGNOSTICS {
            self.errors.push(source.diagnostic(line, problem()));
        } else {
            self.omitted_errors += 1;
        }
    }
}

/// The file that lines come from, and the set their prefixes join.
#[derive(Clone, Copy)]
pub(super) struct Source<'a> {
    pub path: &'a Path,
    pub set: SetId,
    /// Position of line 1 of the file, in [`crate::table::TableSpec::position`]
    /// numbering.
    pub first_position: u32,
}

impl Source<'_> {
    /// Parses the prefix `text` written at `line` into `out`.
    pub fn add(&self, out: &mut Parsed, text: &str, line: u32) {
        // Only text longer than MAX_PREFIX_ECHO bytes can hold more than
        // MAX_PREFIX_ECHO characters, so short lines skip the scan.
        let long_text = (text.len() > MAX_PREFIX_ECHO)
            .then(|| text.char_indices().nth(MAX_PREFIX_ECHO))
            .flatten();
        if let Some((end, _)) = long_text {
            out.error(self, line, || Problem::InvalidPrefix {
                value: format!("{}...", &text[..end]),
                reason: format!(
                    "text of {} bytes is too long for a prefix; write one prefix a line",
                    text.len()
                ),
            });
            return;
        }
        let parsed = match parse_prefix(text) {
            Ok(parsed) => parsed,
            Err(reason) => {
                let value = text.to_owned();
                out.error(self, line, || Problem::InvalidPrefix { value, reason });
                return;
            }
        };
        if let Some(adjustment) = parsed.adjustment {
            let warning = self.diagnostic(line, adjusted(text, parsed, adjustment));
            keep(&mut out.warnings, &mut out.omitted_warnings, warning);
        }

        let position = self.first_position + (line - 1);
        match parsed.network {
            IpNetwork::V4(v4) => out.v4.push(PrefixRecord {
                address: u32::from(v4.network_address()),
                position,
                set: self.set,
                length: v4.netmask(),
            }),
            IpNetwork::V6(v6) => out.v6.push(PrefixRecord {
                address: v6.network_address().octets(),
                position,
                set: self.set,
                length: v6.netmask(),
            }),
        }
    }

    fn diagnostic(&self, line: u32, problem: Problem) -> Diagnostic {
        let location = Location {
            path: self.path.to_owned(),
            line: Some(line),
        };
        Diagnostic { location, problem }
    }

    /// Parses the chunks of a list file of one prefix a line: `#` starts a
    /// comment and blank lines are skipped.
    pub fn parse_list(&self, chunks: &[Chunk<'_>]) -> Parsed {
        let Some((first, rest)) = chunks.split_first() else {
            return Parsed::default();
        };
        std::thread::scope(|scope| {
            let workers: Vec<_> = rest
                .iter()
                .map(|chunk| scope.spawn(move || self.parse_lines(chunk)))
                .collect();
            let mut parsed = self.parse_lines(first);
            for worker in workers {
                match worker.join() {
                    Ok(part) => parsed.append(part),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            parsed
        })
    }

    fn parse_lines(&self, chunk: &Chunk<'_>) -> Parsed {
        // A line count bounds the prefixes to come, so the record list does
        // not grow by doubling past its need.
        let mut parsed = Parsed::with_capacity(chunk.newlines as usize + 1);
        // Byte loops beat `str::lines` and `split_once` here: with a line
        // of about 15 bytes, their searchers cost more to set up than to run.
        // Line ends and `#` are ASCII, so slicing the `str` at them passes
        // its char-boundary check and no line is validated as UTF-8 again.
        let text = chunk.text;
        let bytes = text.as_bytes();
        let mut start = 0;
        let mut line = chunk.first_line;
        while start <= bytes.len() {
            let rest = &bytes[start..];
            let end = start + rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let raw_line = &bytes[start..end];
            let content_end = start
                + raw_line
                    .iter()
                    .position(|&b| b == b'#')
                    .unwrap_or(raw_line.len());
            let content = text[start..content_end].trim_ascii();
            if !content.is_empty() {
                self.add(&mut parsed, content, line);
            }
            start = end + 1;
            line = line.saturating_add(1);
        }
        parsed
    }
}

fn adjusted(text: &str, parsed: ParsedPrefix, adjustment: Adjustment) -> Problem {
    let written = text.to_owned();
    let network = parsed.network.to_string();
    match adjustment {
        Adjustment::HostBitsCleared => Problem::HostBitsSet { written, network },
        Adjustment::MappedToIpv4 => Problem::MappedPrefix { written, network },
        Adjustment::MappedHostBitsCleared => Problem::MappedHostBitsSet { written, network },
    }
}

/// Newline characters in `text`. One more is the number of the last line
/// an editor shows.
pub(super) fn count_newlines(text: &str) -> u32 {
    // Counting into a byte over blocks of 255 lets the compiler compare and
    // add 16 or 32 bytes per instruction.
    let count: usize = text
        .as_bytes()
        .chunks(255)
        .map(|block| block.iter().fold(0u8, |n, &b| n + u8::from(b == b'\n')))
        .map(usize::from)
        .sum();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// A run of whole lines of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Chunk<'a> {
    pub text: &'a str,
    /// 1-based number of the first line of `text` in the file.
    pub first_line: u32,
    /// Newline characters in `text`.
    pub newlines: u32,
}

/// Splits a list file into chunks that each thread parses, split just after
/// a `\n`, so that chunks are about equally large. Returns one chunk for a
/// small file.
pub(super) fn split_list(text: &str) -> Vec<Chunk<'_>> {
    let threads = available_threads()
        .min(MAX_THREADS)
        .min(text.len() / MIN_PARALLEL_BYTES + 1);
    split_at_line_ends(text, threads)
}

fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Splits `text` into at most `parts` chunks of about equal size.
fn split_at_line_ends(text: &str, parts: usize) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::with_capacity(parts);
    let mut rest = text;
    let mut first_line = 1u32;
    for remaining in (2..=parts).rev() {
        let target = rest.len() / remaining;
        let Some(end) = rest.as_bytes()[target..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|at| target + at + 1)
        else {
            break;
        };
        let (text, tail) = rest.split_at(end);
        let newlines = count_newlines(text);
        chunks.push(Chunk {
            text,
            first_line,
            newlines,
        });
        first_line = first_line.saturating_add(newlines);
        rest = tail;
    }
    chunks.push(Chunk {
        text: rest,
        first_line,
        newlines: count_newlines(rest),
    });
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_text_with_line_numbers() {
        let text = "a\nbb\n\nccc\nd\ne";
        for parts in 1..=8 {
            let chunks = split_at_line_ends(text, parts);
            assert!(chunks.len() <= parts, "{parts} parts: {chunks:?}");
            let joined: String = chunks.iter().map(|chunk| chunk.text).collect();
            assert_eq!(joined, text, "{parts} parts");
            let mut offset = 0;
            for chunk in chunks {
                let expected = text[..offset].matches('\n').count() as u32 + 1;
                assert_eq!(chunk.first_line, expected, "{parts} parts, {chunk:?}");
                let newlines = chunk.text.matches('\n').count() as u32;
                assert_eq!(chunk.newlines, newlines, "{parts} parts, {chunk:?}");
                offset += chunk.text.len();
            }
        }
    }

    #[test]
    fn parallel_parse_matches_one_thread() {
        let mut text = String::new();
        for i in 0..200_000u32 {
            match i % 7 {
                0 => text.push_str("# comment\n"),
                1 => text.push('\n'),
                2 => text.push_str(&format!("fd00:{:x}::/32\n", i & 0xffff)),
                3 if i % 1000 == 3 => text.push_str("not a prefix\n"),
                _ => text.push_str(&format!("{}.{}.{}.0/24\n", i >> 16, i >> 8 & 255, i & 255)),
            }
        }

        let source = Source {
            path: Path::new("list.txt"),
            set: 3,
            first_position: 10,
        };
        let whole = source.parse_list(&split_at_line_ends(&text, 1));

        let chunks = split_list(&text);
        assert!(
            chunks.len() > 1 || available_threads() == 1,
            "{}",
            chunks.len()
        );

        let split = source.parse_list(&split_at_line_ends(&text, 3));
        assert_eq!(split.v4, whole.v4);
        assert_eq!(split.v6, whole.v6);
        assert_eq!(split.errors, whole.errors);
        assert_eq!(split.warnings, whole.warnings);

        assert_eq!(whole.errors.len(), 29);
        assert_eq!(whole.errors[0].location.line, Some(4));
        assert_eq!(whole.v4[0].position, 10 + 5 - 1);
    }

    #[test]
    fn newlines_counted_across_blocks() {
        let text = "1.2.3.0/24\n".repeat(1000) + "\n\nend";
        assert_eq!(count_newlines(&text), 1002);
        assert_eq!(count_newlines(""), 0);
        assert_eq!(count_newlines(&"\n".repeat(600)), 600);
    }
}
