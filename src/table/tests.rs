use std::net::IpAddr;

use ip_network::IpNetwork;
use proptest::prelude::*;

use super::*;
use crate::address::normalize;

fn spec(prefixes: &[(&str, SetId)]) -> TableSpec {
    let mut spec = TableSpec {
        sets: vec![
            SetInfo {
                name: "lan".into(),
                internal: true,
            },
            SetInfo {
                name: "guest".into(),
                internal: false,
            },
        ],
        ..TableSpec::default()
    };
    spec.add_file("test.toml".into(), 100);
    for (line, (network, set)) in prefixes.iter().enumerate() {
        let origin = Origin {
            file: 0,
            line: line as u32 + 1,
        };
        spec.push(network.parse().unwrap(), *set, origin);
    }
    spec
}

fn verdict(table: &Table, address: &str) -> Verdict {
    table.classify(normalize(address.parse().unwrap())).verdict
}

#[test]
fn carve_out_is_external() {
    let table = Table::new(spec(&[("192.168.1.0/24", 0), ("192.168.1.192/26", 1)]), 1);
    assert_eq!(verdict(&table, "192.168.1.10"), Verdict::Internal);
    assert_eq!(verdict(&table, "192.168.1.200"), Verdict::External);
    let matched = table.classify(normalize("192.168.1.200".parse().unwrap()));
    assert_eq!(
        matched.prefix.unwrap().network.to_string(),
        "192.168.1.192/26"
    );
}

#[test]
fn insertion_order_does_not_matter() {
    let forward = Table::new(
        spec(&[("10.0.0.0/8", 0), ("10.1.0.0/16", 1), ("10.1.2.0/24", 0)]),
        1,
    );
    let reverse = Table::new(
        spec(&[("10.1.2.0/24", 0), ("10.1.0.0/16", 1), ("10.0.0.0/8", 0)]),
        1,
    );
    for address in ["10.9.9.9", "10.1.9.9", "10.1.2.9", "11.0.0.1"] {
        assert_eq!(
            verdict(&forward, address),
            verdict(&reverse, address),
            "{address}"
        );
    }
    assert_eq!(verdict(&forward, "10.1.9.9"), Verdict::External);
    assert_eq!(verdict(&forward, "10.1.2.9"), Verdict::Internal);
}

#[test]
fn default_routes_and_host_routes_match() {
    let table = Table::new(
        spec(&[
            ("0.0.0.0/0", 0),
            ("8.8.8.8/32", 1),
            ("::/0", 1),
            ("2001:db8::1/128", 0),
        ]),
        1,
    );
    assert_eq!(verdict(&table, "1.2.3.4"), Verdict::Internal);
    assert_eq!(verdict(&table, "8.8.8.8"), Verdict::External);
    assert_eq!(verdict(&table, "8.8.8.9"), Verdict::Internal);
    assert_eq!(verdict(&table, "2001:db8::2"), Verdict::External);
    assert_eq!(verdict(&table, "2001:db8::1"), Verdict::Internal);
}

#[test]
fn sentinels_are_unknown_even_under_default_route() {
    let table = Table::new(spec(&[("0.0.0.0/0", 0), ("::/0", 0)]), 1);
    for address in ["0.0.0.0", "255.255.255.255", "::"] {
        assert_eq!(verdict(&table, address), Verdict::Unknown, "{address}");
    }
}

#[test]
fn mapped_ipv6_matches_ipv4_set() {
    let table = Table::new(spec(&[("192.168.1.0/24", 0)]), 1);
    assert_eq!(verdict(&table, "::ffff:192.168.1.10"), Verdict::Internal);
}

#[test]
fn prefix_counts_split_by_family() {
    let table = Table::new(
        spec(&[("10.0.0.0/8", 0), ("fd00::/8", 0), ("10.1.0.0/16", 1)]),
        1,
    );
    assert_eq!(table.prefix_counts(), vec![(1, 1), (1, 0)]);
}

#[test]
fn matched_prefix_keeps_set_and_origin() {
    let mut spec = spec(&[]);
    spec.add_file("list-a.txt".into(), 3);
    spec.add_file("empty.txt".into(), 0);
    spec.add_file("list-b.txt".into(), 5);
    let entries = [
        ("fd00::/8", 1, Origin { file: 3, line: 5 }),
        ("10.1.0.0/16", 0, Origin { file: 1, line: 3 }),
        ("10.0.0.0/8", 1, Origin { file: 0, line: 100 }),
        ("fd00:1::/32", 0, Origin { file: 3, line: 1 }),
        ("10.1.2.0/24", 1, Origin { file: 1, line: 1 }),
    ];
    for (network, set, origin) in entries {
        spec.push(network.parse().unwrap(), set, origin);
    }
    let table = Table::new(spec, 1);
    assert_eq!(table.prefix_count(), entries.len());
    for (network, set, origin) in entries {
        let network: IpNetwork = network.parse().unwrap();
        let found = table.longest_match(network.network_address()).unwrap();
        assert_eq!(found.network, network);
        assert_eq!(found.set, set, "{network}");
        assert_eq!(found.origin, Some(origin), "{network}");
    }
    let table = table.without_origins();
    let found = table.longest_match("10.1.2.3".parse().unwrap()).unwrap();
    assert_eq!(found.network.to_string(), "10.1.2.0/24");
    assert_eq!(found.set, 1);
    assert_eq!(found.origin, None);
}

#[test]
fn origin_search_tells_lengths_and_families_apart() {
    let mut spec = spec(&[]);
    spec.add_file("list.txt".into(), 10);
    // One address at four lengths, an IPv6 /8 in set 0 that shares its set
    // and length value with 10.0.0.0/8, and IPv6 prefixes that end in the
    // bits of 10.0.0.0.
    let entries = [
        ("10.0.0.0/16", 1, Origin { file: 1, line: 2 }, "10.0.9.9"),
        ("10.0.0.0/8", 0, Origin { file: 0, line: 7 }, "10.9.9.9"),
        ("10.0.0.0/24", 1, Origin { file: 1, line: 9 }, "10.0.0.9"),
        ("10.0.0.0/32", 0, Origin { file: 0, line: 8 }, "10.0.0.0"),
        ("a00::/8", 0, Origin { file: 1, line: 7 }, "a09::1"),
        ("::a00:0/104", 1, Origin { file: 1, line: 3 }, "::a09:0"),
        ("::a00:0/128", 0, Origin { file: 1, line: 5 }, "::a00:0"),
        (
            "::ffff:0:0/96",
            0,
            Origin { file: 1, line: 6 },
            "::ffff:0:1",
        ),
    ];
    for (network, set, origin, _) in entries {
        spec.push(network.parse().unwrap(), set, origin);
    }
    let table = Table::new(spec, 1);
    for (network, set, origin, address) in entries {
        let network: IpNetwork = network.parse().unwrap();
        let found = table.longest_match(address.parse().unwrap()).unwrap();
        assert_eq!(found.network, network, "{address}");
        assert_eq!(found.set, set, "{address}");
        assert_eq!(found.origin, Some(origin), "{address}");
    }

    // A mapped address is looked up as IPv4 and reports the IPv4 prefix.
    let matched = table.classify(normalize("::ffff:10.0.0.9".parse().unwrap()));
    let entry = matched.prefix.unwrap();
    assert_eq!(entry.network.to_string(), "10.0.0.0/24");
    assert_eq!(entry.origin, Some(Origin { file: 1, line: 9 }));
}

#[test]
fn spec_rejects_lines_past_the_limit() {
    let mut spec = TableSpec::default();
    assert_eq!(spec.add_file("a.txt".into(), MAX_LINES - 1), Some(0));
    assert_eq!(spec.add_file("b.txt".into(), 2), None);
    assert_eq!(spec.add_file("c.txt".into(), 1), Some(1));
    assert_eq!(spec.files().len(), 2);
    assert_eq!(spec.origin(MAX_LINES - 1), Origin { file: 1, line: 1 });
}

/// Brute-force longest-prefix match: the longest prefix that contains the
/// address, scanning every prefix.
fn brute_force(prefixes: &[(IpNetwork, SetId)], address: IpAddr) -> Option<usize> {
    prefixes
        .iter()
        .enumerate()
        .filter(|(_, (network, _))| network.contains(address))
        .max_by_key(|(_, (network, _))| network.netmask())
        .map(|(index, _)| index)
}

fn arbitrary_v4_prefix() -> impl Strategy<Value = IpNetwork> {
    // A narrow first octet makes prefixes overlap often.
    (0u8..4, any::<[u8; 3]>(), 0u8..=32).prop_map(|(first, rest, length)| {
        let address = std::net::Ipv4Addr::new(first, rest[0], rest[1], rest[2]);
        IpNetwork::V4(ip_network::Ipv4Network::new_truncate(address, length).unwrap())
    })
}

fn arbitrary_v6_prefix() -> impl Strategy<Value = IpNetwork> {
    (0u16..4, any::<u128>(), 0u8..=128).prop_map(|(first, rest, length)| {
        let bits = (u128::from(first) << 112) | (rest >> 16);
        let address = std::net::Ipv6Addr::from(bits);
        IpNetwork::V6(ip_network::Ipv6Network::new_truncate(address, length).unwrap())
    })
}

fn arbitrary_address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..4, any::<[u8; 3]>())
            .prop_map(|(first, rest)| IpAddr::from([first, rest[0], rest[1], rest[2]])),
        (0u16..4, any::<u128>()).prop_map(|(first, rest)| IpAddr::from(std::net::Ipv6Addr::from(
            (u128::from(first) << 112) | (rest >> 16)
        ))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn table_matches_brute_force_scan(
        raw in prop::collection::vec(
            (prop_oneof![arbitrary_v4_prefix(), arbitrary_v6_prefix()], 0u16..2),
            0..64,
        ),
        addresses in prop::collection::vec(arbitrary_address(), 1..64),
    ) {
        let mut seen = std::collections::HashSet::new();
        let prefixes: Vec<(IpNetwork, SetId)> =
            raw.into_iter().filter(|(network, _)| seen.insert(*network)).collect();
        let mut table_spec = spec(&[]);
        for (line, (network, set)) in (1..).zip(&prefixes) {
            table_spec.push(*network, *set, Origin { file: 0, line });
        }
        let served = Table::new(table_spec.clone(), 1).without_origins();
        let table = Table::new(table_spec, 1);
        let mut validated = ip_network_table::IpNetworkTable::new();
        for (network, _) in &prefixes {
            validated.insert(*network, ());
        }

        for address in addresses {
            let best = brute_force(&prefixes, address);
            let expected = best.map(|index| prefixes[index].0);
            let found = table.longest_match(address);
            prop_assert_eq!(found.map(|entry| entry.network), expected, "compiled table, address {}", address);
            prop_assert_eq!(found.map(|entry| entry.set), best.map(|index| prefixes[index].1), "set, address {}", address);
            let line = best.map(|index| index as u32 + 1);
            prop_assert_eq!(found.and_then(|entry| entry.origin).map(|origin| origin.line), line, "line, address {}", address);
            let found = served.longest_match(address);
            prop_assert_eq!(found.map(|entry| (entry.network, entry.set, entry.origin)), best.map(|index| (prefixes[index].0, prefixes[index].1, None)), "table without origins, address {}", address);
            let found = validated.longest_match(address).map(|(network, _)| network);
            prop_assert_eq!(found, expected, "ip_network_table, address {}", address);
        }
    }
}

#[test]
fn prefixes_follow_lookup_indexes() {
    let table = Table::new(
        spec(&[("10.0.0.0/8", 0), ("10.9.0.0/16", 1), ("fd00::/8", 0)]),
        1,
    );
    let cases = [("10.9.1.1", 1, 16), ("10.1.1.1", 0, 8), ("fd00::1", 0, 8)];
    for (address, set, length) in cases {
        let index = match address.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v4) => table.compiled().lookup_v4(u32::from(v4)),
            IpAddr::V6(v6) => table.compiled().lookup_v6(u128::from(v6)),
        };
        let index = index.expect("a prefix contains the address");
        assert_eq!(
            table.prefixes()[index as usize],
            PrefixInfo { set, length },
            "{address}"
        );
    }
}
