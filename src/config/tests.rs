use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use super::*;
use crate::classify::classify_text;
use crate::table::{Table, Verdict};

const CONFIG: &str = "/etc/ipclass/ipclass.toml";

const LAN: &str = "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\n";

/// Parses `text` as if read from [`CONFIG`], with list files served from
/// `lists` (names relative to the config folder); any other list file is
/// missing.
fn parse_with(text: &str, lists: &[(&str, &str)]) -> Result<Loaded, ConfigErrors> {
    let folder = Path::new(CONFIG).parent().unwrap();
    let lists: HashMap<PathBuf, String> = lists
        .iter()
        .map(|(name, contents)| (folder.join(name), (*contents).to_owned()))
        .collect();
    parse(text, Path::new(CONFIG), &mut |path| {
        lists
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "No such file or directory"))
    })
}

fn accepted(text: &str, lists: &[(&str, &str)]) -> Loaded {
    parse_with(text, lists).unwrap_or_else(|errors| panic!("config rejected: {errors}"))
}

fn rejected(text: &str, lists: &[(&str, &str)]) -> Vec<Diagnostic> {
    match parse_with(text, lists) {
        Ok(loaded) => panic!(
            "config accepted with {} prefixes",
            loaded.spec.prefix_count()
        ),
        Err(errors) => {
            assert_eq!(errors.path, Path::new(CONFIG));
            errors.errors
        }
    }
}

/// Asserts that `text` is rejected with exactly one error, at `line` of the
/// config, whose message contains every part of `expected`.
fn assert_one_error(text: &str, line: u32, expected: &[&str]) {
    let errors = rejected(text, &[]);
    assert_eq!(errors.len(), 1, "{text:?} gave {errors:#?}");
    let message = errors[0].to_string();
    assert_eq!(errors[0].location.path, Path::new(CONFIG), "{message}");
    assert_eq!(errors[0].location.line, Some(line), "{message}");
    assert!(
        message.starts_with(&format!("{CONFIG}:{line}: ")),
        "{message}"
    );
    for part in expected {
        assert!(message.contains(part), "{part:?} missing from {message:?}");
    }
}

fn messages(diagnostics: &[Diagnostic]) -> Vec<String> {
    diagnostics.iter().map(ToString::to_string).collect()
}

/// Classifies each address and describes the outcome as "verdict set network".
fn outcomes(loaded: &Loaded, addresses: &[&str]) -> Vec<String> {
    let table = Table::new(loaded.spec.clone(), 1);
    addresses
        .iter()
        .map(|address| {
            let found = classify_text(&table, address);
            let set = found.set.map(|set| set.name.as_str()).unwrap_or("");
            let network = found
                .prefix
                .map(|entry| entry.network.to_string())
                .unwrap_or_default();
            format!("{address}: {} {set} {network}", found.verdict)
        })
        .collect()
}

#[test]
fn valid_config_loads_sets_and_origins() {
    let text = "# home\n[sets.lan]\ninternal = true\nnetworks = [\n  \"192.168.1.0/24\",\n  \"fd12::/16\",\n]\n\n[sets.guest]\ninternal = false\ndescription = \"guests\"\nnetworks = [\"192.168.1.192/26\"]\n";
    let loaded = accepted(text, &[]);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.sources, vec![PathBuf::from(CONFIG)]);
    let sets: Vec<(&str, bool)> = loaded
        .spec
        .sets
        .iter()
        .map(|set| (set.name.as_str(), set.internal))
        .collect();
    // Sets are read in name order, whatever their order in the file.
    assert_eq!(sets, vec![("guest", false), ("lan", true)]);
    let prefixes: Vec<(String, u16, u32, u32)> = loaded
        .spec
        .prefixes()
        .map(|entry| {
            let origin = entry.origin.unwrap();
            (
                entry.network.to_string(),
                entry.set,
                origin.file,
                origin.line,
            )
        })
        .collect();
    // Prefixes are sorted by address and length, IPv4 first.
    assert_eq!(
        prefixes,
        vec![
            ("192.168.1.0/24".to_owned(), 1, 0, 5),
            ("192.168.1.192/26".to_owned(), 0, 0, 12),
            ("fd12::/16".to_owned(), 1, 0, 6),
        ]
    );
    assert_eq!(loaded.content_hash.len(), 64);
}

#[test]
fn unknown_top_level_key_is_error() {
    let text = format!("title = \"home\"\n{LAN}");
    assert_one_error(
        &text,
        1,
        &["unknown key \"title\"", "at the top level", "\"sets\""],
    );
}

#[test]
fn unknown_key_in_set_is_error() {
    let text =
        "[sets.lan]\ninternal = true\nnetwork = [\"10.0.0.0/8\"]\nnetworks = [\"10.0.0.0/8\"]\n";
    assert_one_error(
        text,
        3,
        &[
            "unknown key \"network\"",
            "in set \"lan\"",
            "\"networks\"",
            "\"files\"",
        ],
    );
}

#[test]
fn set_without_internal_is_error() {
    let text = format!("{LAN}\n[sets.vpn]\nnetworks = [\"10.8.0.0/24\"]\n");
    assert_one_error(
        &text,
        5,
        &[
            "set \"vpn\" has no `internal` key",
            "add `internal = true` or `internal = false`",
        ],
    );
}

/// Names that differ only in case would show as two look-alike sets in
/// `/v1/table` and in metric labels.
#[test]
fn set_names_differing_in_case_are_error() {
    let text = format!("{LAN}\n[sets.LAN]\ninternal = false\nnetworks = [\"192.0.2.0/24\"]\n");
    assert_one_error(
        &text,
        5,
        &[
            "set name \"LAN\"",
            "set \"lan\" at /etc/ipclass/ipclass.toml:1",
            "differs only in case",
            "rename one of them",
        ],
    );
}

#[test]
fn kelvin_sign_set_name_is_only_invalid() {
    // U+212A KELVIN SIGN lowercases to an ASCII k.
    let text = "[sets.k]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\n\n[sets.\"\u{212a}\"]\ninternal = false\nnetworks = [\"192.0.2.0/24\"]\n";
    assert_one_error(text, 5, &["invalid set name \"\u{212a}\""]);
}

#[test]
fn wrong_types_are_errors() {
    let cases = [
        ("sets = 1\n", 1, "`sets` must be a table, found integer"),
        (
            "[sets]\nlan = \"10.0.0.0/8\"\n",
            2,
            "set \"lan\" must be a table, found string",
        ),
        (
            "[sets.lan]\ninternal = \"yes\"\nnetworks = [\"10.0.0.0/8\"]\n",
            2,
            "`internal` in set \"lan\" must be true or false, found string",
        ),
        (
            "[sets.lan]\ninternal = true\nnetworks = \"10.0.0.0/8\"\n",
            3,
            "`networks` in set \"lan\" must be an array of strings, found string",
        ),
        (
            "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\", 10]\n",
            3,
            "each entry of `networks` in set \"lan\" must be a string, found integer",
        ),
        (
            "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\nfiles = \"vpn.txt\"\n",
            4,
            "`files` in set \"lan\" must be an array of strings, found string",
        ),
        (
            "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\nfiles = [true]\n",
            4,
            "each entry of `files` in set \"lan\" must be a string, found boolean",
        ),
        (
            "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\ndescription = 3\n",
            4,
            "`description` in set \"lan\" must be a string, found integer",
        ),
    ];
    for (text, line, expected) in cases {
        assert_one_error(text, line, &[expected]);
    }
}

#[test]
fn unparseable_prefix_names_the_value() {
    let text =
        "[sets.lan]\ninternal = true\nnetworks = [\n  \"10.0.0.0/8\",\n  \"10.1.2.300/32\",\n]\n";
    assert_one_error(
        text,
        5,
        &[
            "invalid prefix \"10.1.2.300/32\"",
            "is not an IPv4 or IPv6 address",
        ],
    );
    let text = "[sets.lan]\ninternal = true\nnetworks = [\"10.1.2.3\"]\n";
    assert_one_error(
        text,
        3,
        &["invalid prefix \"10.1.2.3\"", "write 10.1.2.3/32"],
    );
}

#[test]
fn leading_zero_octets_are_rejected() {
    for prefix in ["010.0.0.0/8", "10.0.0.01/32", "::ffff:010.0.0.0/104"] {
        let text = format!("[sets.lan]\ninternal = true\nnetworks = [\"{prefix}\"]\n");
        assert_one_error(
            &text,
            3,
            &[&format!("invalid prefix {prefix:?}"), "leading zeros"],
        );
    }
}

#[test]
fn prefix_in_two_sets_names_both_locations() {
    let text = "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\n\n[sets.guest]\ninternal = false\nfiles = [\"guest.txt\"]\n";
    let lists = [("guest.txt", "# guests\n172.16.0.0/12\n10.0.0.0/8\n")];
    let errors = rejected(text, &lists);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let message = errors[0].to_string();
    // The config line comes before any list file, so "lan" has it first.
    assert_eq!(
        message,
        "/etc/ipclass/guest.txt:3: prefix 10.0.0.0/8 is in set \"guest\" and also in set \"lan\" \
         at /etc/ipclass/ipclass.toml:3; a prefix belongs to one set only, so remove one of them"
    );
}

#[test]
fn list_file_in_two_sets_is_one_error() {
    let text = "[sets.lan]\ninternal = true\nfiles = [\"office.txt\"]\n\n[sets.guest]\ninternal = false\nfiles = [\"office.txt\"]\n";
    let lists = [("office.txt", "10.0.0.0/8\n172.16.0.0/12\nbogus\n")];
    let errors = rejected(text, &lists);
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "/etc/ipclass/ipclass.toml:7: list file /etc/ipclass/office.txt is named in set \"guest\" \
             and also in set \"lan\" at /etc/ipclass/ipclass.toml:3; a prefix belongs to one set only, \
             so name the file in one set",
            "/etc/ipclass/office.txt:3: invalid prefix \"bogus\": not a prefix; write an address, '/', \
             and a prefix length, such as 192.168.1.0/24",
        ]
    );
}

#[test]
fn list_file_with_dot_is_same_file() {
    let text = "[sets.lan]\ninternal = true\nfiles = [\"office.txt\"]\n\n[sets.guest]\ninternal = false\nfiles = [\"./office.txt\"]\n";
    let lists = [("office.txt", "")];
    let errors = rejected(text, &lists);
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert!(
        messages[0].contains("list file /etc/ipclass/office.txt is named in set \"guest\""),
        "{}",
        messages[0]
    );
}

#[test]
fn list_file_named_twice_is_read_once() {
    let text = "[sets.lan]\ninternal = true\nfiles = [\"office.txt\", \"office.txt\"]\n";
    let lists = [("office.txt", "10.0.0.0/8\n")];
    let loaded = accepted(text, &lists);
    assert_eq!(loaded.spec.prefix_count(), 1);
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        ["/etc/ipclass/ipclass.toml:3: list file /etc/ipclass/office.txt is named again in set \"lan\" \
          (first at /etc/ipclass/ipclass.toml:3); it is read once, so remove the repeat"]
    );
}

#[test]
fn prefix_in_two_sets_after_normalizing_is_error() {
    let text = "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\n[sets.guest]\ninternal = false\nnetworks = [\"10.9.9.9/8\"]\n";
    let errors = rejected(text, &[]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].location.line, Some(6));
    let message = errors[0].to_string();
    assert!(
        message.contains("in set \"guest\" and also in set \"lan\" at /etc/ipclass/ipclass.toml:3"),
        "{message}"
    );
}

#[test]
fn duplicate_names_earlier_list_file_first() {
    // "zeta" sorts after "alpha" but comes first in the config, so its
    // list file is read first and contains the first of the two prefixes.
    let text = "[sets.zeta]\ninternal = true\nfiles = [\"zeta.txt\"]\n\n[sets.alpha]\ninternal = false\nfiles = [\"alpha.txt\"]\n";
    let lists = [
        ("zeta.txt", "10.0.0.0/8\n192.0.2.0/24\n"),
        ("alpha.txt", "# first line\n192.0.2.0/24\n"),
    ];
    let errors = rejected(text, &lists);
    assert_eq!(
        messages(&errors),
        vec![
            "/etc/ipclass/alpha.txt:2: prefix 192.0.2.0/24 is in set \"alpha\" and also in set \
             \"zeta\" at /etc/ipclass/zeta.txt:2; a prefix belongs to one set only, so remove one \
             of them"
        ]
    );
}

#[test]
fn repeat_points_at_first_file_in_array() {
    // b.txt is named first, so its line 1 comes before line 4 of a.txt.
    let text =
        "[sets.lan]\ninternal = true\nfiles = [\"b.txt\", \"a.txt\"]\nnetworks = [\"fd00::/8\"]\n";
    let lists = [
        ("a.txt", "# a\n\nfd00::/8\n10.0.0.0/8\n"),
        ("b.txt", "10.0.0.0/8\n"),
    ];
    let loaded = accepted(text, &lists);
    assert_eq!(
        messages(&loaded.warnings),
        vec![
            "/etc/ipclass/a.txt:3: prefix fd00::/8 appears again in set \"lan\" (first at \
             /etc/ipclass/ipclass.toml:4); the repeat is ignored",
            "/etc/ipclass/a.txt:4: prefix 10.0.0.0/8 appears again in set \"lan\" (first at \
             /etc/ipclass/b.txt:1); the repeat is ignored",
        ]
    );
}

#[test]
fn prefix_repeated_in_one_set_warns() {
    let text =
        "[sets.lan]\ninternal = true\nnetworks = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/8\",\n]\n";
    let loaded = accepted(text, &[]);
    assert_eq!(loaded.spec.prefix_count(), 1);
    assert_eq!(
        messages(&loaded.warnings),
        vec![format!(
            "{CONFIG}:5: prefix 10.0.0.0/8 appears again in set \"lan\" (first at {CONFIG}:4); \
             the repeat is ignored"
        )]
    );
}

#[test]
fn host_bits_are_cleared_with_warning() {
    let text = "[sets.lan]\ninternal = true\nnetworks = [\"192.168.1.7/24\", \"fd12::1/16\"]\n";
    let loaded = accepted(text, &[]);
    let networks: Vec<String> = loaded
        .spec
        .prefixes()
        .map(|entry| entry.network.to_string())
        .collect();
    assert_eq!(networks, vec!["192.168.1.0/24", "fd12::/16"]);
    assert_eq!(
        messages(&loaded.warnings),
        vec![
            format!("{CONFIG}:3: host bits are set in 192.168.1.7/24; using 192.168.1.0/24"),
            format!("{CONFIG}:3: host bits are set in fd12::1/16; using fd12::/16"),
        ]
    );
}

#[test]
fn mapped_prefix_is_used_as_ipv4() {
    let text = "[sets.lan]\ninternal = true\nnetworks = [\"::ffff:192.168.0.0/112\"]\n";
    let loaded = accepted(text, &[]);
    assert_eq!(loaded.spec.prefix(0).network.to_string(), "192.168.0.0/16");
    assert_eq!(loaded.warnings.len(), 1);
    let warning = loaded.warnings[0].to_string();
    assert!(warning.contains("::ffff:192.168.0.0/112"), "{warning}");
    assert!(warning.contains("used as 192.168.0.0/16"), "{warning}");
    let found = outcomes(&loaded, &["192.168.3.4", "::ffff:192.168.3.4"]);
    assert_eq!(
        found,
        vec![
            "192.168.3.4: internal lan 192.168.0.0/16",
            "::ffff:192.168.3.4: internal lan 192.168.0.0/16"
        ]
    );
}

#[test]
fn mapped_prefix_colliding_with_ipv4_is_duplicate() {
    let text = "[sets.lan]\ninternal = true\nnetworks = [\"192.168.0.0/16\"]\n[sets.guest]\ninternal = false\nnetworks = [\"::ffff:192.168.0.0/112\"]\n";
    let errors = rejected(text, &[]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let message = errors[0].to_string();
    assert!(
        message.contains("prefix 192.168.0.0/16 is in set \"guest\" and also in set \"lan\""),
        "{message}"
    );
}

#[test]
fn config_without_prefixes_is_rejected() {
    let texts = [
        "",
        "\n\n",
        "# only a comment\n# and another\n",
        "[sets]\n",
        "[sets.lan]\ninternal = true\n",
        "[sets.lan]\ninternal = true\nnetworks = []\nfiles = []\n",
    ];
    for text in texts {
        let errors = rejected(text, &[]);
        assert_eq!(errors.len(), 1, "{text:?} gave {errors:#?}");
        assert_eq!(errors[0].problem, Problem::NoPrefixes, "{text:?}");
        let message = errors[0].to_string();
        assert!(message.starts_with(CONFIG), "{message}");
        assert!(
            message.contains("every address would be external"),
            "{message}"
        );
    }
}

#[test]
fn list_file_without_prefixes_is_rejected() {
    let text = "[sets.vpn]\ninternal = true\nfiles = [\"vpn.txt\"]\n";
    let errors = rejected(text, &[("vpn.txt", "# nothing yet\n\n")]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].problem, Problem::NoPrefixes);
}

#[test]
fn empty_set_warns_beside_other_sets() {
    let text = format!("{LAN}[sets.spare]\ninternal = false\nnetworks = []\n");
    let loaded = accepted(&text, &[]);
    assert_eq!(
        messages(&loaded.warnings),
        vec![format!("{CONFIG}:4: set \"spare\" has no prefixes")]
    );
}

#[test]
fn truncated_toml_is_syntax_error_with_line() {
    let cases = [
        (
            "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\",\n",
            3,
        ),
        ("[sets.lan]\ninternal = true\nnetworks = [\"10.0.", 3),
        (
            "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\n[sets.gu",
            4,
        ),
        ("[sets.lan]\ninternal = tr", 2),
        ("[sets.lan]\ninternal =", 2),
    ];
    for (text, line) in cases {
        let errors = rejected(text, &[]);
        assert!(!errors.is_empty(), "{text:?}");
        let message = errors[0].to_string();
        assert!(message.contains("invalid TOML"), "{text:?}: {message}");
        assert_eq!(errors[0].location.line, Some(line), "{text:?}: {message}");
    }
}

#[test]
fn empty_file_name_is_error() {
    assert_one_error(
        "[sets.lan]\ninternal = true\nfiles = [\"\"]\n",
        3,
        &["set \"lan\" names an empty path in `files`; name a list file"],
    );
}

#[test]
fn duplicate_key_is_named() {
    assert_one_error(
        "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\"]\nnetworks = [\"10.1.0.0/16\"]\n",
        4,
        &[
            "invalid TOML: duplicate key `networks`;",
            "keep one of them",
        ],
    );
    // A repeated table is named once, without errors for its keys.
    assert_one_error(
        "[sets.lan]\ninternal = true\nnetworks = []\n\n[sets.lan]\ninternal = false\n",
        5,
        &["invalid TOML: table `[sets.lan]` appears twice; merge the two sections into one"],
    );
    // A key repeated in a later table is still reported.
    let errors = rejected(
        "[sets.lan]\ninternal = true\n[sets.lan]\n[sets.b]\ninternal = true\ninternal = true\n",
        &[],
    );
    let lines: Vec<_> = errors.iter().map(|error| error.location.line).collect();
    assert_eq!(lines, [Some(3), Some(6)], "{errors:?}");
    // One error that toml reports twice is listed once.
    let errors = rejected("sets = { a = { internal = true } }\n[sets.wan]\n", &[]);
    assert_eq!(errors.len(), 1, "{errors:?}");
}

/// Cutting the example config at every byte never yields a table without
/// prefixes: each cut is rejected or keeps a prefix it had.
#[test]
fn truncation_never_yields_empty_table() {
    let text = "# sets\n[sets.lan]\ninternal = true\nnetworks = [\"192.168.1.0/24\", \"fd12::/48\"]\n\n[sets.guest]\ninternal = false\nnetworks = [\"192.168.1.192/26\"]\n";
    let full: Vec<String> = accepted(text, &[])
        .spec
        .prefixes()
        .map(|entry| entry.network.to_string())
        .collect();
    for cut in 0..text.len() {
        if let Ok(loaded) = parse_with(&text[..cut], &[]) {
            assert_ne!(loaded.spec.prefix_count(), 0, "cut at {cut}");
            for entry in loaded.spec.prefixes() {
                let network = entry.network.to_string();
                assert!(full.contains(&network), "cut at {cut} made up {network}");
            }
        }
    }
}

#[test]
fn list_file_skips_comments_blank_lines_bom_and_crlf() {
    let text = "[sets.vpn]\ninternal = true\nfiles = [\"vpn.txt\"]\n";
    let list = "\u{feff}# VPN ranges\r\n\r\n10.8.0.0/24   # WireGuard\r\n   \r\n\t100.64.0.0/10\r\n#fd00::/8\r\nfd7a:115c:a1e0::/48";
    let loaded = accepted(text, &[("vpn.txt", list)]);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(
        loaded.sources,
        vec![PathBuf::from(CONFIG), PathBuf::from("/etc/ipclass/vpn.txt")]
    );
    let prefixes: Vec<(String, u32, u32)> = loaded
        .spec
        .prefixes()
        .map(|entry| {
            (
                entry.network.to_string(),
                entry.origin.unwrap().file,
                entry.origin.unwrap().line,
            )
        })
        .collect();
    assert_eq!(
        prefixes,
        vec![
            ("10.8.0.0/24".to_owned(), 1, 3),
            ("100.64.0.0/10".to_owned(), 1, 5),
            ("fd7a:115c:a1e0::/48".to_owned(), 1, 7),
        ]
    );
}

#[test]
fn bad_list_line_names_list_path_and_line() {
    let text = format!("{LAN}[sets.vpn]\ninternal = true\nfiles = [\"lists/vpn.txt\"]\n");
    let list = "10.8.0.0/24\r\n\r\n10.8.1.0/33\r\n010.9.0.0/16\n";
    let errors = rejected(&text, &[("lists/vpn.txt", list)]);
    assert_eq!(
        messages(&errors),
        vec![
            "/etc/ipclass/lists/vpn.txt:3: invalid prefix \"10.8.1.0/33\": prefix length \"33\" \
             is out of range; use 0 to 32"
                .to_owned(),
            "/etc/ipclass/lists/vpn.txt:4: invalid prefix \"010.9.0.0/16\": leading zeros in an \
             IPv4 octet are ambiguous (some tools read them as octal); write each octet without \
             them"
                .to_owned(),
        ]
    );
}

#[test]
fn missing_list_file_is_error_at_config_line() {
    let text = format!("{LAN}[sets.vpn]\ninternal = true\nfiles = [\n  \"vpn.txt\",\n]\n");
    let errors = rejected(&text, &[]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].location.line, Some(7));
    let message = errors[0].to_string();
    assert!(
        message.starts_with(&format!("{CONFIG}:7: cannot read /etc/ipclass/vpn.txt: ")),
        "{message}"
    );
    assert!(message.contains("No such file or directory"), "{message}");
    assert!(message.contains("check that the file exists"), "{message}");
}

#[test]
fn every_error_is_collected_with_file_and_line() {
    let text = "\
title = 1
[sets.lan]
internal = true
networks = [\"10.0.0.0/8\", \"10.0.0.300/32\"]
[sets.vpn]
files = [\"vpn.txt\", \"gone.txt\"]
[sets.guest]
internal = false
color = \"red\"
networks = [\"010.1.0.0/16\", \"10.0.0.0/8\"]
[sets.\"bad name\"]
internal = true
networks = [\"fd00::/8\"]
";
    let lists = [("vpn.txt", "10.8.0.0/24\nnot-a-prefix\n")];
    let errors = rejected(text, &lists);
    let found: Vec<(String, Option<u32>)> = errors
        .iter()
        .map(|error| {
            (
                error.location.path.display().to_string(),
                error.location.line,
            )
        })
        .collect();
    let config = |line| (CONFIG.to_owned(), Some(line));
    assert_eq!(
        found,
        vec![
            config(1),
            config(4),
            config(5),
            config(6),
            config(9),
            config(10),
            config(10),
            config(11),
            ("/etc/ipclass/vpn.txt".to_owned(), Some(2)),
        ],
        "{:#?}",
        messages(&errors)
    );
    let all = messages(&errors).join("\n");
    for part in [
        "\"title\"",
        "\"10.0.0.300/32\"",
        "set \"vpn\" has no `internal` key",
        "cannot read /etc/ipclass/gone.txt",
        "\"color\"",
        "\"010.1.0.0/16\"",
        "prefix 10.0.0.0/8 is in set \"guest\" and also in set \"lan\" at /etc/ipclass/ipclass.toml:4",
        "invalid set name \"bad name\"",
        "\"not-a-prefix\"",
    ] {
        assert!(all.contains(part), "{part:?} missing from:\n{all}");
    }
    let summary = parse_with(text, &lists).unwrap_err().to_string();
    assert!(
        summary.starts_with(&format!(
            "invalid config {CONFIG} (9 errors)\n  {CONFIG}:1: "
        )),
        "{summary}"
    );
}

#[test]
fn order_of_sets_and_prefixes_does_not_matter() {
    let forward = "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\", \"10.1.2.0/24\", \"fd00::/8\"]\n[sets.guest]\ninternal = false\nnetworks = [\"10.1.0.0/16\", \"fd00:1::/32\"]\n[sets.all]\ninternal = false\nnetworks = [\"0.0.0.0/0\"]\n";
    let reverse = "[sets.all]\ninternal = false\nnetworks = [\"0.0.0.0/0\"]\n[sets.guest]\ninternal = false\nnetworks = [\"fd00:1::/32\", \"10.1.0.0/16\"]\n[sets.lan]\ninternal = true\nnetworks = [\"fd00::/8\", \"10.1.2.0/24\", \"10.0.0.0/8\"]\n";
    let addresses = [
        "10.0.0.1",
        "10.1.0.1",
        "10.1.2.3",
        "10.1.3.3",
        "11.0.0.1",
        "fd00::1",
        "fd00:1::1",
        "fe80::1",
    ];
    let expected = vec![
        "10.0.0.1: internal lan 10.0.0.0/8",
        "10.1.0.1: external guest 10.1.0.0/16",
        "10.1.2.3: internal lan 10.1.2.0/24",
        "10.1.3.3: external guest 10.1.0.0/16",
        "11.0.0.1: external all 0.0.0.0/0",
        "fd00::1: internal lan fd00::/8",
        "fd00:1::1: external guest fd00:1::/32",
        "fe80::1: external  ",
    ];
    assert_eq!(outcomes(&accepted(forward, &[]), &addresses), expected);
    assert_eq!(outcomes(&accepted(reverse, &[]), &addresses), expected);
}

#[test]
fn content_hash_follows_list_file() {
    let text = "[sets.vpn]\ninternal = true\nfiles = [\"vpn.txt\"]\n";
    let first = accepted(text, &[("vpn.txt", "10.8.0.0/24\n")]).content_hash;
    let again = accepted(text, &[("vpn.txt", "10.8.0.0/24\n")]).content_hash;
    let changed = accepted(text, &[("vpn.txt", "10.9.0.0/24\n")]).content_hash;
    let comment = accepted(text, &[("vpn.txt", "10.8.0.0/24 # peers\n")]).content_hash;
    assert_eq!(first, again);
    assert_ne!(first, changed);
    assert_ne!(first, comment);
    let config_changed = accepted(&format!("# note\n{text}"), &[("vpn.txt", "10.8.0.0/24\n")]);
    assert_ne!(first, config_changed.content_hash);
}

#[test]
fn default_and_host_routes_are_accepted() {
    let text = "[sets.all]\ninternal = false\nnetworks = [\"0.0.0.0/0\", \"::/0\"]\n[sets.hosts]\ninternal = true\nnetworks = [\"10.1.2.3/32\", \"2001:db8::1/128\"]\n";
    let loaded = accepted(text, &[]);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let found = outcomes(
        &loaded,
        &["10.1.2.3", "10.1.2.4", "2001:db8::1", "2001:db8::2"],
    );
    assert_eq!(
        found,
        vec![
            "10.1.2.3: internal hosts 10.1.2.3/32",
            "10.1.2.4: external all 0.0.0.0/0",
            "2001:db8::1: internal hosts 2001:db8::1/128",
            "2001:db8::2: external all ::/0",
        ]
    );
    let table = Table::new(loaded.spec, 1);
    assert_eq!(classify_text(&table, "0.0.0.0").verdict, Verdict::Unknown);
}

mod end_to_end {
    //! Random prefixes written as config text and a list file, random
    //! addresses written in several spellings, classified through the real
    //! parsing and lookup path and compared with a brute-force scan.

    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use ip_network::{IpNetwork, Ipv4Network, Ipv6Network};
    use proptest::prelude::*;

    use super::*;

    /// Set names, whether each is internal, and whether its prefixes are
    /// written in a list file instead of the config.
    const SETS: [(&str, bool, bool); 3] =
        [("a", true, false), ("b", false, false), ("c", true, true)];

    /// A prefix as written (host bits possibly set, IPv4 possibly written as
    /// IPv4-mapped IPv6), the network it means, and the set it goes in.
    #[derive(Debug, Clone)]
    struct Written {
        text: String,
        network: IpNetwork,
        set: usize,
    }

    fn v4_prefix() -> impl Strategy<Value = (String, IpNetwork)> {
        // Few distinct first octets make prefixes nest and overlap often.
        (0u8..3, any::<[u8; 3]>(), 0u8..=32, any::<bool>()).prop_map(
            |(first, rest, length, mapped)| {
                let address = Ipv4Addr::new(first, rest[0], rest[1], rest[2]);
                let network = Ipv4Network::new_truncate(address, length).unwrap();
                let text = if mapped {
                    format!("::ffff:{address}/{}", u16::from(length) + 96)
                } else {
                    format!("{address}/{length}")
                };
                (text, IpNetwork::V4(network))
            },
        )
    }

    fn v6_prefix() -> impl Strategy<Value = (String, IpNetwork)> {
        (0u16..3, any::<u128>(), 0u8..=128).prop_map(|(first, rest, length)| {
            let address = Ipv6Addr::from((u128::from(first) << 112) | (rest >> 16));
            let network = Ipv6Network::new_truncate(address, length).unwrap();
            (format!("{address}/{length}"), IpNetwork::V6(network))
        })
    }

    fn prefixes() -> impl Strategy<Value = Vec<Written>> {
        prop::collection::vec(
            (prop_oneof![v4_prefix(), v6_prefix()], 0..SETS.len()),
            1..48,
        )
        .prop_map(|raw| {
            let mut seen = std::collections::HashSet::new();
            raw.into_iter()
                .filter(|((_, network), _)| seen.insert(*network))
                .map(|((text, network), set)| Written { text, network, set })
                .collect()
        })
    }

    /// An address and a text spelling of it that must classify the same.
    fn address() -> impl Strategy<Value = (IpAddr, String)> {
        let v4 = (0u8..3, any::<[u8; 3]>(), 0u8..3).prop_map(|(first, rest, spelling)| {
            let address = Ipv4Addr::new(first, rest[0], rest[1], rest[2]);
            let text = match spelling {
                0 => address.to_string(),
                1 => format!("::ffff:{address}"),
                _ => format!(" {address}\t"),
            };
            (IpAddr::V4(address), text)
        });
        let v6 = (0u16..3, any::<u128>(), any::<bool>()).prop_map(|(first, rest, zoned)| {
            let address = Ipv6Addr::from((u128::from(first) << 112) | (rest >> 16));
            let text = if zoned {
                format!("{address}%eth0")
            } else {
                address.to_string()
            };
            (IpAddr::V6(address), text)
        });
        let sentinel = prop_oneof![
            Just((IpAddr::V4(Ipv4Addr::UNSPECIFIED), "0.0.0.0".to_owned())),
            Just((
                IpAddr::V4(Ipv4Addr::BROADCAST),
                "::ffff:255.255.255.255".to_owned()
            )),
            Just((IpAddr::V6(Ipv6Addr::UNSPECIFIED), "::".to_owned())),
        ];
        prop_oneof![8 => v4, 8 => v6, 1 => sentinel]
    }

    fn config_text(prefixes: &[Written]) -> (String, String) {
        let mut config = String::new();
        let mut list = String::from("# generated\n");
        for (index, (name, internal, in_list)) in SETS.iter().enumerate() {
            config.push_str(&format!("[sets.{name}]\ninternal = {internal}\n"));
            let texts: Vec<String> = prefixes
                .iter()
                .filter(|written| written.set == index)
                .map(|written| format!("{:?}", written.text))
                .collect();
            if *in_list {
                config.push_str("files = [\"c.txt\"]\n");
                for written in prefixes.iter().filter(|written| written.set == index) {
                    list.push_str(&written.text);
                    list.push('\n');
                }
            } else {
                config.push_str(&format!("networks = [{}]\n", texts.join(", ")));
            }
        }
        (config, list)
    }

    /// Computes the verdict, set and network with a longest-prefix scan.
    fn brute_force(prefixes: &[Written], address: IpAddr) -> (Verdict, String, String) {
        if address.is_unspecified() || address == IpAddr::V4(Ipv4Addr::BROADCAST) {
            return (Verdict::Unknown, String::new(), String::new());
        }
        let longest = prefixes
            .iter()
            .filter(|written| written.network.contains(address))
            .max_by_key(|written| written.network.netmask());
        match longest {
            Some(written) => {
                let (name, internal, _) = SETS[written.set];
                let verdict = if internal {
                    Verdict::Internal
                } else {
                    Verdict::External
                };
                (verdict, name.to_owned(), written.network.to_string())
            }
            None => (Verdict::External, String::new(), String::new()),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn config_lookup_matches_brute_force_scan(
            prefixes in prefixes(),
            addresses in prop::collection::vec(address(), 1..48),
        ) {
            let (config, list) = config_text(&prefixes);
            let loaded = parse_with(&config, &[("c.txt", &list)])
                .map_err(|errors| TestCaseError::fail(errors.to_string()))?;
            prop_assert_eq!(loaded.spec.prefix_count(), prefixes.len());
            let table = Table::new(loaded.spec, 1);
            for (address, text) in addresses {
                let found = classify_text(&table, &text);
                let set = found.set.map(|set| set.name.clone()).unwrap_or_default();
                let network = found
                    .prefix
                    .map(|entry| entry.network.to_string())
                    .unwrap_or_default();
                let expected = brute_force(&prefixes, address);
                prop_assert_eq!((found.verdict, set, network), expected, "address {:?}", text);
            }
        }
    }
}

/// A list file of one huge line must not be repeated whole in the error,
/// which the server also logs and returns from `/v1/table`.
#[test]
fn overlong_prefix_is_shortened_in_error() {
    let config = "[sets.vpn]\ninternal = true\nfiles = [\"vpn.txt\"]\n";
    let line = "1".repeat(100_000);
    let errors = rejected(config, &[("vpn.txt", &line)]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let message = errors[0].to_string();
    assert!(message.len() < 300, "message of {} bytes", message.len());
    assert!(
        message.contains("/etc/ipclass/vpn.txt:1: invalid prefix \"1111"),
        "{message}"
    );
    assert!(message.contains("too long"), "{message}");
}

#[test]
fn prefix_limit_per_family() {
    // Three distinct IPv4 prefixes (one repeated) and two IPv6 prefixes.
    let text = "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\", \"10.1.0.0/16\", \"10.2.0.0/16\", \"10.2.0.0/16\", \"fd00::/8\", \"fe80::/10\"]\n";
    let path = Path::new(CONFIG);
    let mut no_lists = |_: &Path| -> io::Result<String> { unreachable!() };

    let loaded = parse_with_limit(text, path, &mut no_lists, 3).expect("3 IPv4 prefixes fit");
    assert_eq!(loaded.spec.prefix_count(), 5);

    let errors = parse_with_limit(text, path, &mut no_lists, 2).expect_err("limit of 2");
    assert_eq!(
        messages(&errors.errors),
        vec![format!(
            "{CONFIG}: 3 IPv4 prefixes across all sets, but at most 2 are supported; \
             merge adjacent prefixes or move some to a separate ipclass instance"
        )]
    );
    assert_eq!(
        parse(text, path, &mut no_lists).map(|loaded| loaded.spec.prefix_count()),
        Ok(5)
    );
}

#[test]
fn repeated_lines_stop_reading_at_bound() {
    // With a limit of 2 per family, 4 lines are read at most, repeats
    // included, before the next file.
    let text = "[sets.lan]\ninternal = true\nfiles = [\"a.txt\", \"b.txt\"]\n";
    let path = Path::new(CONFIG);
    let mut lists = |file: &Path| -> io::Result<String> {
        assert!(file.ends_with("a.txt"), "{} is not read", file.display());
        Ok("10.0.0.0/8\n".repeat(5))
    };
    let errors = parse_with_limit(text, path, &mut lists, 2).expect_err("over the bound");
    let messages = messages(&errors.errors);
    assert!(
        messages.iter().any(|message| message.ends_with(
            "b.txt: more than 4 prefixes read before this file, counting repeats, so the rest are not read; \
             remove repeated lines, or split the sets across ipclass instances"
        )),
        "{messages:?}"
    );
}

const LIST_SET: &str = "[sets.lan]\ninternal = true\nfiles = [\"lan.txt\"]\n";

#[test]
fn many_invalid_lines_keep_a_bounded_list() {
    // Enough lines for the parallel parse, so each chunk and their merge
    // are bounded.
    let lines = 200_000;
    let list = "not-a-prefix\n".repeat(lines);
    let errors = parse_with(LIST_SET, &[("lan.txt", &list)]).unwrap_err();
    assert_eq!(errors.errors.len(), MAX_DIAGNOSTICS);
    assert_eq!(errors.omitted_errors, lines - MAX_DIAGNOSTICS);
    assert_eq!(errors.errors[0].location.line, Some(1));
    let message = errors.to_string();
    assert!(
        message.contains(&format!("({lines} errors)")),
        "{message:.200}"
    );
    let more = format!("and {} more errors", lines - MAX_DIAGNOSTICS);
    assert!(message.ends_with("to see them"), "{message:.200}");
    assert!(message.contains(&more), "{more} missing");
    assert!(
        message.len() < 300 * MAX_DIAGNOSTICS,
        "{} bytes",
        message.len()
    );
}

#[test]
fn many_warnings_keep_a_bounded_list() {
    // Each line has host bits set, which is a warning.
    let list: String = (0..300u32)
        .map(|i| format!("10.{}.{}.1/24\n", i / 256, i % 256))
        .collect();
    let loaded = accepted(LIST_SET, &[("lan.txt", &list)]);
    assert_eq!(loaded.warnings.len(), MAX_DIAGNOSTICS);
    assert_eq!(loaded.omitted_warnings, 300 - MAX_DIAGNOSTICS);
    let more = more_warnings(loaded.omitted_warnings).unwrap();
    assert!(more.starts_with("and 200 more warnings"), "{more}");
}

#[test]
fn many_duplicates_keep_a_bounded_list() {
    let list: String = (0..1_000u32)
        .map(|i| format!("10.0.{}.0/24\n", i % 250))
        .collect();
    let loaded = accepted(LIST_SET, &[("lan.txt", &list)]);
    assert_eq!(loaded.spec.prefix_count(), 250);
    assert_eq!(loaded.warnings.len(), MAX_DIAGNOSTICS);
    assert_eq!(loaded.omitted_warnings, 750 - MAX_DIAGNOSTICS);
}
