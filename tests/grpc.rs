//! The gRPC API of the real binary, called with a tonic client: every
//! address rule, batch limits, the packed form, health and reflection.

mod common;

use common::{Server, TempDir};
use ipclass::proto::ip_classifier_client::IpClassifierClient;
use ipclass::proto::{
    GetTableInfoRequest, IsInternalPackedRequest, IsInternalRequest, IsInternalResponse, Verdict,
};
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic::Code;

const CONFIG: &str = r#"
[sets.home-lan]
internal = true
networks = ["192.168.1.0/24", "fd12:3456:789a::/48"]

[sets.guest-wifi]
internal = false
networks = ["192.168.1.192/26"]

[sets.hosts]
internal = true
networks = ["203.0.113.7/32", "2001:db8::7/128"]

[sets.link-local]
internal = true
networks = ["fe80::/10"]

[sets.vpn]
internal = true
files = ["vpn.txt"]
"#;

const VPN: &str = "# WireGuard\n10.8.0.0/24\n";

/// Everything is internal except a carve-out, so only sentinels can be unknown.
const DEFAULT_ROUTE: &str = r#"
[sets.everything]
internal = true
networks = ["0.0.0.0/0", "::/0"]

[sets.carve-out]
internal = false
networks = ["10.0.0.0/8", "fd00::/8"]
"#;

struct Fixture {
    // Field order matters: the server stops before its folder is removed.
    server: Server,
    _dir: TempDir,
}

fn start(config: &str, extra: &[&str]) -> Fixture {
    let dir = TempDir::new("grpc");
    dir.write("vpn.txt", VPN);
    let path = dir.write("ipclass.toml", config);
    let server = Server::start(&path, extra);
    Fixture { server, _dir: dir }
}

async fn connect(server: &Server) -> IpClassifierClient<Channel> {
    IpClassifierClient::new(channel(server).await)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024)
}

async fn is_internal(
    client: &mut IpClassifierClient<Channel>,
    ips: &[&str],
) -> Result<IsInternalResponse, tonic::Status> {
    let ips = ips.iter().map(|ip| (*ip).to_owned()).collect();
    let response = client.is_internal(IsInternalRequest { ips }).await?;
    Ok(response.into_inner())
}

async fn channel(server: &Server) -> Channel {
    Channel::from_shared(server.grpc_endpoint())
        .expect("endpoint URI is valid")
        .connect()
        .await
        .expect("connect to ipclass")
}

/// A result as (ip, verdict, internal, set, network), for one-line asserts.
type Row = (String, Verdict, bool, String, String);

async fn rows(client: &mut IpClassifierClient<Channel>, ips: &[&str]) -> Vec<Row> {
    let response = is_internal(client, ips).await.expect("IsInternal succeeds");
    assert_eq!(response.results.len(), ips.len());
    for result in &response.results {
        if result.verdict() != Verdict::Invalid {
            assert_eq!(result.error, "", "{}", result.ip);
        }
    }
    response
        .results
        .into_iter()
        .map(|result| {
            let verdict = result.verdict();
            (
                result.ip,
                verdict,
                result.internal,
                result.set,
                result.network,
            )
        })
        .collect()
}

fn row(ip: &str, verdict: Verdict, set: &str, network: &str) -> Row {
    let internal = verdict == Verdict::Internal;
    (
        ip.to_owned(),
        verdict,
        internal,
        set.to_owned(),
        network.to_owned(),
    )
}

#[tokio::test]
async fn carve_out_is_external() {
    let fixture = start(CONFIG, &[]);
    let mut client = connect(&fixture.server).await;
    let found = rows(
        &mut client,
        &[
            "192.168.1.10",
            "192.168.1.191",
            "192.168.1.192",
            "192.168.1.255",
            "10.8.0.9",
        ],
    )
    .await;
    assert_eq!(
        found,
        vec![
            row(
                "192.168.1.10",
                Verdict::Internal,
                "home-lan",
                "192.168.1.0/24"
            ),
            row(
                "192.168.1.191",
                Verdict::Internal,
                "home-lan",
                "192.168.1.0/24"
            ),
            row(
                "192.168.1.192",
                Verdict::External,
                "guest-wifi",
                "192.168.1.192/26"
            ),
            row(
                "192.168.1.255",
                Verdict::External,
                "guest-wifi",
                "192.168.1.192/26"
            ),
            row("10.8.0.9", Verdict::Internal, "vpn", "10.8.0.0/24"),
        ]
    );
}

#[tokio::test]
async fn unmatched_address_is_external_without_set() {
    let fixture = start(CONFIG, &[]);
    let mut client = connect(&fixture.server).await;
    let found = rows(&mut client, &["8.8.8.8", "2001:db8::8", "192.168.2.1"]).await;
    assert_eq!(
        found,
        vec![
            row("8.8.8.8", Verdict::External, "", ""),
            row("2001:db8::8", Verdict::External, "", ""),
            row("192.168.2.1", Verdict::External, "", ""),
        ]
    );
}

#[tokio::test]
async fn default_route_and_host_routes_match() {
    let fixture = start(CONFIG, &[]);
    let mut client = connect(&fixture.server).await;
    let found = rows(
        &mut client,
        &["203.0.113.7", "203.0.113.8", "2001:db8::7", "2001:db8::6"],
    )
    .await;
    assert_eq!(
        found,
        vec![
            row("203.0.113.7", Verdict::Internal, "hosts", "203.0.113.7/32"),
            row("203.0.113.8", Verdict::External, "", ""),
            row("2001:db8::7", Verdict::Internal, "hosts", "2001:db8::7/128"),
            row("2001:db8::6", Verdict::External, "", ""),
        ]
    );

    let fixture = start(DEFAULT_ROUTE, &[]);
    let mut client = connect(&fixture.server).await;
    let found = rows(
        &mut client,
        &["1.2.3.4", "10.1.2.3", "2001:db8::1", "fd00::1"],
    )
    .await;
    assert_eq!(
        found,
        vec![
            row("1.2.3.4", Verdict::Internal, "everything", "0.0.0.0/0"),
            row("10.1.2.3", Verdict::External, "carve-out", "10.0.0.0/8"),
            row("2001:db8::1", Verdict::Internal, "everything", "::/0"),
            row("fd00::1", Verdict::External, "carve-out", "fd00::/8"),
        ]
    );
}

#[tokio::test]
async fn mapped_ipv6_matches_ipv4_set() {
    let fixture = start(CONFIG, &[]);
    let mut client = connect(&fixture.server).await;
    let spellings = [
        "::ffff:192.168.1.10",
        "::FFFF:192.168.1.10",
        "::ffff:c0a8:10a",
        "0:0:0:0:0:ffff:192.168.1.10",
        "0000:0000:0000:0000:0000:ffff:c0a8:010a",
    ];
    let found = rows(&mut client, &spellings).await;
    for (spelling, found) in spellings.iter().zip(found) {
        assert_eq!(
            found,
            row(spelling, Verdict::Internal, "home-lan", "192.168.1.0/24")
        );
    }
    let found = rows(&mut client, &["::ffff:192.168.1.200"]).await;
    assert_eq!(
        found[0],
        row(
            "::ffff:192.168.1.200",
            Verdict::External,
            "guest-wifi",
            "192.168.1.192/26"
        )
    );
}

#[tokio::test]
async fn other_ipv4_embeddings_are_not_unwrapped() {
    let fixture = start(CONFIG, &[]);
    let mut client = connect(&fixture.server).await;
    let found = rows(
        &mut client,
        &["::192.168.1.10", "64:ff9b::192.168.1.10", "2002:c0a8:10a::"],
    )
    .await;
    assert_eq!(
        found,
        vec![
            row("::192.168.1.10", Verdict::External, "", ""),
            row("64:ff9b::192.168.1.10", Verdict::External, "", ""),
            row("2002:c0a8:10a::", Verdict::External, "", ""),
        ]
    );
}

#[tokio::test]
async fn zone_is_dropped_before_lookup() {
    let fixture = start(CONFIG, &[]);
    let mut client = connect(&fixture.server).await;
    let found = rows(
        &mut client,
        &[
            "fe80::1%eth0",
            "fd12:3456:789a::5%wg0",
            "fe80::1%25",
            "::ffff:192.168.1.10%3",
        ],
    )
    .await;
    assert_eq!(
        found,
        vec![
            row("fe80::1%eth0", Verdict::Internal, "link-local", "fe80::/10"),
            row(
                "fd12:3456:789a::5%wg0",
                Verdict::Internal,
                "home-lan",
                "fd12:3456:789a::/48"
            ),
            row("fe80::1%25", Verdict::Internal, "link-local", "fe80::/10"),
            row(
                "::ffff:192.168.1.10%3",
                Verdict::Internal,
                "home-lan",
                "192.168.1.0/24"
            ),
        ]
    );
}

#[tokio::test]
async fn sentinels_are_unknown_even_under_default_route() {
    let fixture = start(DEFAULT_ROUTE, &[]);
    let mut client = connect(&fixture.server).await;
    let sentinels = [
        "0.0.0.0",
        "::",
        "255.255.255.255",
        "0:0:0:0:0:0:0:0",
        "::ffff:0.0.0.0",
        "::ffff:255.255.255.255",
        " 255.255.255.255 ",
    ];
    let found = rows(&mut client, &sentinels).await;
    for (sentinel, found) in sentinels.iter().zip(found) {
        assert_eq!(found, row(sentinel, Verdict::Unknown, "", ""));
    }
    // Neighbours of the sentinels are ordinary addresses.
    let found = rows(&mut client, &["0.0.0.1", "::1", "255.255.255.254"]).await;
    for found in found {
        assert_eq!(found.1, Verdict::Internal, "{}", found.0);
    }
}

/// Each invalid form with a text the error must repeat.
const INVALID: &[(&str, &str)] = &[
    ("10.1.2.3:8080", "remove the port"),
    ("192.168.1.10:443", "remove the port"),
    ("[::1]:443", "remove the brackets"),
    ("[fe80::1%eth0]:8443", "remove the brackets"),
    ("[::1]", "remove the brackets"),
    ("192.168.1.0/24", "CIDR"),
    ("fd00::/8", "CIDR"),
    ("010.0.0.1", "leading zeros"),
    ("192.168.001.10", "leading zeros"),
    ("::ffff:010.0.0.1", "leading zeros"),
    ("localhost", "host names are not resolved"),
    ("auth.example.com", "host names are not resolved"),
    ("10.1.2.3%eth0", "zone"),
    ("fe80::1%", "zone"),
    ("1.2.3", "shorthand IPv4"),
    ("0x7f.0.0.1", "all four decimal octets"),
    ("1.2.3.256", "not an IPv4 or IPv6 address"),
    ("1:2:3:4:5:6:7:8:9", "not an IPv4 or IPv6 address"),
    ("192.168.1.10 8.8.8.8", "not an IPv4 or IPv6 address"),
    ("3232235786", "shorthand IPv4"),
    ("１２７.０.０.１", "such as 192.0.2.1"),
];

#[tokio::test]
async fn invalid_forms_are_invalid_and_never_internal() {
    let fixture = start(DEFAULT_ROUTE, &[]);
    let mut client = connect(&fixture.server).await;
    let ips: Vec<&str> = INVALID.iter().map(|(ip, _)| *ip).collect();
    let response = is_internal(&mut client, &ips)
        .await
        .expect("batch succeeds");
    assert_eq!(response.results.len(), INVALID.len());
    for ((ip, reason), result) in INVALID.iter().zip(&response.results) {
        assert_eq!(result.ip, *ip);
        assert_eq!(result.verdict(), Verdict::Invalid, "{ip}");
        assert!(!result.internal, "{ip}");
        assert_eq!(result.set, "", "{ip}");
        assert_eq!(result.network, "", "{ip}");
        assert!(
            result.error.contains(&format!("{ip:?}")),
            "{ip}: {}",
            result.error
        );
        assert!(result.error.contains(reason), "{ip}: {}", result.error);
    }
}

/// `IsInternalRequest` with its addresses as bytes, to send text that
/// `String` cannot hold.
#[derive(Clone, PartialEq, prost::Message)]
struct BytesRequest {
    #[prost(bytes = "vec", repeated, tag = "1")]
    ips: Vec<Vec<u8>>,
}

#[tokio::test]
async fn address_not_utf8_fails_alone() {
    let fixture = start(DEFAULT_ROUTE, &[]);
    let mut grpc = tonic::client::Grpc::new(channel(&fixture.server).await);
    grpc.ready().await.expect("the channel is ready");
    let request = BytesRequest {
        ips: vec![
            b"10.1.2.3".to_vec(),
            b"10.0.0.1\xff".to_vec(),
            b"::1".to_vec(),
        ],
    };
    let path = axum::http::uri::PathAndQuery::from_static("/ipclass.v1.IpClassifier/IsInternal");
    let codec = tonic_prost::ProstCodec::<BytesRequest, IsInternalResponse>::default();
    let response = grpc
        .unary(tonic::Request::new(request), path, codec)
        .await
        .expect("the batch succeeds")
        .into_inner();

    let verdicts: Vec<Verdict> = response
        .results
        .iter()
        .map(|result| result.verdict())
        .collect();
    assert_eq!(verdicts[1], Verdict::Invalid);
    assert_ne!(verdicts[0], Verdict::Invalid);
    assert_ne!(verdicts[2], Verdict::Invalid);
    let bad = &response.results[1];
    assert_eq!(bad.ip, "10.0.0.1\u{fffd}");
    assert!(!bad.internal);
    assert!(
        bad.error.contains("bytes that are not UTF-8"),
        "{}",
        bad.error
    );
}

#[tokio::test]
async fn empty_and_overlong_text_are_invalid() {
    let fixture = start(DEFAULT_ROUTE, &[]);
    let mut client = connect(&fixture.server).await;
    let overlong = "1".repeat(300);
    let overlong_address = format!("::ffff:{}1.2.3.4", "0".repeat(200));
    // The limit counts the text as sent, whitespace included.
    let padded = format!("192.168.1.10{}", " ".repeat(117));
    let ips = [
        "",
        "   ",
        "\t\r\n",
        overlong.as_str(),
        overlong_address.as_str(),
        padded.as_str(),
    ];
    let response = is_internal(&mut client, &ips)
        .await
        .expect("batch succeeds");
    let expected = [
        "empty address",
        "empty address",
        "empty address",
        "address of 300 bytes is too long",
        "is too long",
        "address of 129 bytes is too long",
    ];
    for ((ip, reason), result) in ips.iter().zip(expected).zip(&response.results) {
        assert_eq!(result.ip, *ip);
        assert_eq!(result.verdict(), Verdict::Invalid, "{ip:?}");
        assert!(!result.internal, "{ip:?}");
        assert!(result.error.contains(reason), "{ip:?}: {}", result.error);
    }
}

#[tokio::test]
async fn surrounding_whitespace_is_trimmed() {
    let fixture = start(CONFIG, &[]);
    let mut client = connect(&fixture.server).await;
    let found = rows(
        &mut client,
        &[" 192.168.1.10\t", "\n10.8.0.5\r\n", "  fe80::1%eth0 "],
    )
    .await;
    assert_eq!(
        found,
        vec![
            row(
                " 192.168.1.10\t",
                Verdict::Internal,
                "home-lan",
                "192.168.1.0/24"
            ),
            row("\n10.8.0.5\r\n", Verdict::Internal, "vpn", "10.8.0.0/24"),
            row(
                "  fe80::1%eth0 ",
                Verdict::Internal,
                "link-local",
                "fe80::/10"
            ),
        ]
    );
}

#[tokio::test]
async fn results_keep_request_order() {
    let fixture = start(CONFIG, &[]);
    let mut client = connect(&fixture.server).await;
    let cycle = [
        "192.168.1.10",
        "bogus",
        "8.8.8.8",
        "0.0.0.0",
        "192.168.1.200",
        "fe80::1%lo",
    ];
    let ips: Vec<String> = (0..3000)
        .map(|index| match index % 7 {
            6 => format!("10.8.0.{}", index % 256),
            other => cycle[other].to_owned(),
        })
        .collect();
    let texts: Vec<&str> = ips.iter().map(String::as_str).collect();
    let response = is_internal(&mut client, &texts)
        .await
        .expect("batch succeeds");
    assert_eq!(response.results.len(), ips.len());
    let expected = [
        Verdict::Internal,
        Verdict::Invalid,
        Verdict::External,
        Verdict::Unknown,
        Verdict::External,
        Verdict::Internal,
        Verdict::Internal,
    ];
    for (index, (ip, result)) in ips.iter().zip(&response.results).enumerate() {
        assert_eq!(&result.ip, ip, "result {index}");
        assert_eq!(
            result.verdict(),
            expected[index % 7],
            "result {index}: {ip}"
        );
    }
}

#[tokio::test]
async fn empty_batch_returns_empty_result() {
    let fixture = start(CONFIG, &[]);
    let mut client = connect(&fixture.server).await;
    let response = is_internal(&mut client, &[])
        .await
        .expect("empty batch succeeds");
    assert!(response.results.is_empty());
    assert_eq!(response.generation, 1);
}

#[tokio::test]
async fn first_table_is_generation_one() {
    let fixture = start(CONFIG, &[]);
    let mut client = connect(&fixture.server).await;
    let response = is_internal(&mut client, &["192.168.1.10"]).await.unwrap();
    assert_eq!(response.generation, 1);
    let info = client
        .get_table_info(GetTableInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.generation, 1);
    assert_eq!(info.content_hash.len(), 64);
    let sets: Vec<(String, bool, u64, u64)> = info
        .sets
        .into_iter()
        .map(|set| (set.name, set.internal, set.ipv4_prefixes, set.ipv6_prefixes))
        .collect();
    assert_eq!(
        sets,
        vec![
            ("guest-wifi".to_owned(), false, 1, 0),
            ("home-lan".to_owned(), true, 1, 1),
            ("hosts".to_owned(), true, 1, 1),
            ("link-local".to_owned(), true, 0, 1),
            ("vpn".to_owned(), true, 1, 0),
        ]
    );
}

#[tokio::test]
async fn configured_batch_limit_is_enforced() {
    let fixture = start(CONFIG, &["--max-batch-size", "3"]);
    let mut client = connect(&fixture.server).await;
    let response = is_internal(&mut client, &["192.168.1.1", "bogus", "8.8.8.8"])
        .await
        .expect("a batch at the limit succeeds");
    assert_eq!(response.results.len(), 3);

    let status = is_internal(
        &mut client,
        &["192.168.1.1", "1.1.1.1", "2.2.2.2", "3.3.3.3"],
    )
    .await
    .expect_err("a batch over the limit fails");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("batch of 4 addresses exceeds the maximum of 3"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn default_batch_limit_is_65536() {
    let fixture = start(CONFIG, &[]);
    let mut client = connect(&fixture.server).await;
    let ips: Vec<String> = (0..65_537u32)
        .map(|index| format!("192.168.1.{}", index % 256))
        .collect();

    let at_limit = IsInternalRequest {
        ips: ips[..65_536].to_vec(),
    };
    let response = client.is_internal(at_limit).await.expect("65,536 succeed");
    let results = response.into_inner().results;
    assert_eq!(results.len(), 65_536);
    assert_eq!(results[65_535].ip, "192.168.1.255");
    assert_eq!(results[65_535].verdict(), Verdict::External);

    let status = client
        .is_internal(IsInternalRequest { ips })
        .await
        .expect_err("65,537 fail");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("65537"), "{}", status.message());
    assert!(
        status.message().contains("maximum of 65536"),
        "{}",
        status.message()
    );
}

fn packed_v4(addresses: &[&str]) -> Vec<u8> {
    addresses
        .iter()
        .flat_map(|text| text.parse::<std::net::Ipv4Addr>().unwrap().octets())
        .collect()
}

fn packed_v6(addresses: &[&str]) -> Vec<u8> {
    addresses
        .iter()
        .flat_map(|text| text.parse::<std::net::Ipv6Addr>().unwrap().octets())
        .collect()
}

#[tokio::test]
async fn packed_form_returns_one_verdict_byte_each() {
    let fixture = start(CONFIG, &[]);
    let mut client = connect(&fixture.server).await;
    let request = IsInternalPackedRequest {
        ipv4: packed_v4(&[
            "192.168.1.10",
            "192.168.1.200",
            "8.8.8.8",
            "255.255.255.255",
            "0.0.0.0",
        ])
        .into(),
        ipv6: packed_v6(&[
            "fd12:3456:789a::1",
            "::ffff:192.168.1.10",
            "::",
            "2001:db8::7",
            "::1",
        ])
        .into(),
    };
    let response = client
        .is_internal_packed(request)
        .await
        .unwrap()
        .into_inner();
    let internal = Verdict::Internal as u8;
    let external = Verdict::External as u8;
    let unknown = Verdict::Unknown as u8;
    assert_eq!(
        response.ipv4_verdicts.to_vec(),
        vec![internal, external, external, unknown, unknown]
    );
    assert_eq!(
        response.ipv6_verdicts.to_vec(),
        vec![internal, internal, unknown, internal, external]
    );
    assert_eq!(response.generation, 1);

    let empty = IsInternalPackedRequest::default();
    let response = client.is_internal_packed(empty).await.unwrap().into_inner();
    assert!(response.ipv4_verdicts.is_empty());
    assert!(response.ipv6_verdicts.is_empty());
}

#[tokio::test]
async fn packed_form_rejects_partial_addresses() {
    let fixture = start(CONFIG, &[]);
    let mut client = connect(&fixture.server).await;
    let cases = [
        (
            vec![192, 168, 1, 10, 7],
            vec![],
            "ipv4 is 5 bytes long, which is not a multiple of 4",
        ),
        (
            vec![],
            vec![0; 15],
            "ipv6 is 15 bytes long, which is not a multiple of 16",
        ),
        (vec![1, 2, 3], vec![0; 16], "ipv4 is 3 bytes long"),
    ];
    for (ipv4, ipv6, expected) in cases {
        let request = IsInternalPackedRequest {
            ipv4: ipv4.into(),
            ipv6: ipv6.into(),
        };
        let status = client
            .is_internal_packed(request)
            .await
            .expect_err(expected);
        assert_eq!(status.code(), Code::InvalidArgument, "{expected}");
        assert!(status.message().contains(expected), "{}", status.message());
    }
}

#[tokio::test]
async fn packed_form_counts_both_families_against_limit() {
    let fixture = start(CONFIG, &["--max-batch-size", "3"]);
    let mut client = connect(&fixture.server).await;
    let at_limit = IsInternalPackedRequest {
        ipv4: packed_v4(&["192.168.1.1", "8.8.8.8"]).into(),
        ipv6: packed_v6(&["::1"]).into(),
    };
    client
        .is_internal_packed(at_limit)
        .await
        .expect("3 addresses succeed");
    let over = IsInternalPackedRequest {
        ipv4: packed_v4(&["192.168.1.1", "8.8.8.8"]).into(),
        ipv6: packed_v6(&["::1", "::2"]).into(),
    };
    let status = client
        .is_internal_packed(over)
        .await
        .expect_err("4 addresses fail");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("maximum of 3"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn health_reports_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let fixture = start(CONFIG, &[]);
    let mut health = HealthClient::new(channel(&fixture.server).await);
    for service in ["", "ipclass.v1.IpClassifier"] {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let response = health.check(request).await.expect(service).into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = HealthCheckRequest {
        service: "no.such.Service".to_owned(),
    };
    let status = health.check(unknown).await.expect_err("unknown service");
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let fixture = start(CONFIG, &[]);
    let mut reflection = ServerReflectionClient::new(channel(&fixture.server).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection stream opens")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("reflection answers")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}");
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    assert!(
        names.contains(&"ipclass.v1.IpClassifier".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
}

/// Clients that compress requests, such as grpcio with
/// `compression=grpc.Compression.Gzip`, are served by every method.
#[tokio::test]
async fn gzip_requests_are_accepted() {
    let fixture = start(CONFIG, &[]);
    let mut client = connect(&fixture.server)
        .await
        .send_compressed(CompressionEncoding::Gzip);

    let rows = rows(&mut client, &["192.168.1.10", "8.8.8.8"]).await;
    assert_eq!(
        rows[0],
        row(
            "192.168.1.10",
            Verdict::Internal,
            "home-lan",
            "192.168.1.0/24"
        )
    );
    assert_eq!(rows[1], row("8.8.8.8", Verdict::External, "", ""));

    let request = IsInternalPackedRequest {
        ipv4: vec![192, 168, 1, 10, 8, 8, 8, 8].into(),
        ipv6: Default::default(),
    };
    let packed = client
        .is_internal_packed(request)
        .await
        .expect("IsInternalPacked succeeds")
        .into_inner();
    let expected = [Verdict::Internal as u8, Verdict::External as u8];
    assert_eq!(packed.ipv4_verdicts.as_ref(), expected);
    assert!(packed.ipv6_verdicts.is_empty());

    let info = client
        .get_table_info(GetTableInfoRequest {})
        .await
        .expect("GetTableInfo succeeds")
        .into_inner();
    assert_eq!(info.generation, 1);
}

/// A small compressed request that expands past the message limit is
/// rejected, so compression does not lift the bound on a batch.
#[tokio::test]
async fn gzip_request_over_limit_is_rejected() {
    let fixture = start(CONFIG, &["--max-batch-size", "3"]);
    let mut client = connect(&fixture.server)
        .await
        .send_compressed(CompressionEncoding::Gzip);
    let ips = vec!["192.168.1.10"; 10_000];
    let status = is_internal(&mut client, &ips)
        .await
        .expect_err("a batch far over the limit fails");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("size limit"), "{status:?}");
}
