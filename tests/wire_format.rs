//! The text gRPC method and the single-address HTTP response, as real
//! clients see them: every field of the generated messages and the exact JSON bytes.

mod common;

use common::{Server, TempDir};
use ipclass::proto::ip_classifier_client::IpClassifierClient;
use ipclass::proto::{Classification, IsInternalPackedRequest, IsInternalRequest, Verdict};

const CONFIG: &str = "[sets.lan]\ninternal = true\nnetworks = [\"10.0.0.0/8\", \"fd00::/8\"]\n\
                      [sets.guest]\ninternal = false\nnetworks = [\"10.9.0.0/16\"]\n";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn expected(ip: &str, verdict: Verdict, set: &str, network: &str) -> Classification {
    Classification {
        ip: ip.into(),
        verdict: verdict.into(),
        internal: verdict == Verdict::Internal,
        set: set.into(),
        network: network.into(),
        error: String::new(),
    }
}

#[test]
fn text_batch_fields_over_grpc() {
    let dir = TempDir::new("wire-text");
    let config = dir.write("c.toml", CONFIG);
    let server = Server::start(&config, &[]);
    let ips = [
        "10.1.2.3",
        " 10.9.0.1",
        "8.8.8.8",
        "0.0.0.0",
        "fd00::1%eth0",
        "10.1.2.3:80",
    ];

    let response = runtime().block_on(async {
        let mut client = IpClassifierClient::connect(server.grpc_endpoint())
            .await
            .unwrap();
        let request = IsInternalRequest {
            ips: ips.iter().map(|ip| ip.to_string()).collect(),
        };
        client.is_internal(request).await.unwrap().into_inner()
    });

    assert_eq!(response.generation, 1);
    assert_eq!(response.results.len(), ips.len());
    let results = &response.results;
    assert_eq!(
        results[0],
        expected("10.1.2.3", Verdict::Internal, "lan", "10.0.0.0/8")
    );
    assert_eq!(
        results[1],
        expected(" 10.9.0.1", Verdict::External, "guest", "10.9.0.0/16")
    );
    assert_eq!(results[2], expected("8.8.8.8", Verdict::External, "", ""));
    assert_eq!(results[3], expected("0.0.0.0", Verdict::Unknown, "", ""));
    assert_eq!(
        results[4],
        expected("fd00::1%eth0", Verdict::Internal, "lan", "fd00::/8")
    );
    assert_eq!(results[5].verdict, i32::from(Verdict::Invalid));
    assert!(!results[5].internal);
    assert!(
        results[5].error.contains("remove the port"),
        "{}",
        results[5].error
    );
}

#[test]
fn text_batch_over_limit_is_rejected() {
    let dir = TempDir::new("wire-limit");
    let config = dir.write("c.toml", CONFIG);
    let server = Server::start(&config, &["--max-batch-size", "2"]);

    let status = runtime().block_on(async {
        let mut client = IpClassifierClient::connect(server.grpc_endpoint())
            .await
            .unwrap();
        let request = IsInternalRequest {
            ips: vec!["10.0.0.1".into(); 3],
        };
        client.is_internal(request).await.unwrap_err()
    });
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("maximum of 2"),
        "{}",
        status.message()
    );
}

#[test]
fn packed_batch_verdict_bytes() {
    let dir = TempDir::new("wire-packed");
    let config = dir.write("c.toml", CONFIG);
    let server = Server::start(&config, &["--workers", "1"]);

    let response = runtime().block_on(async {
        let mut client = IpClassifierClient::connect(server.grpc_endpoint())
            .await
            .unwrap();
        let request = IsInternalPackedRequest {
            ipv4: vec![10, 1, 2, 3, 10, 9, 0, 1, 8, 8, 8, 8, 0, 0, 0, 0].into(),
            ipv6: [0xfdu8]
                .into_iter()
                .chain([0; 14])
                .chain([1])
                .collect::<Vec<u8>>()
                .into(),
        };
        client
            .is_internal_packed(request)
            .await
            .unwrap()
            .into_inner()
    });
    assert_eq!(response.ipv4_verdicts.as_ref(), [1, 2, 2, 3]);
    assert_eq!(response.ipv6_verdicts.as_ref(), [1]);
    assert_eq!(response.generation, 1);
}

#[test]
fn single_get_json_bytes() {
    let dir = TempDir::new("wire-json");
    let config = dir.write("c.toml", CONFIG);
    let server = Server::start(&config, &[]);

    let cases = [
        (
            "10.1.2.3",
            200,
            r#"{"ip":"10.1.2.3","verdict":"internal","internal":true,"set":"lan","network":"10.0.0.0/8","generation":1}"#,
        ),
        (
            "8.8.8.8",
            200,
            r#"{"ip":"8.8.8.8","verdict":"external","internal":false,"set":"","network":"","generation":1}"#,
        ),
        (
            "a%22b",
            400,
            r#"{"ip":"a\"b","verdict":"invalid","internal":false,"set":"","network":"","generation":1,"error":"invalid address \"a\\\"b\": not an IPv4 or IPv6 address; send dotted-quad IPv4 such as 192.0.2.1, or IPv6 such as 2001:db8::1"}"#,
        ),
    ];
    runtime().block_on(async {
        let client = reqwest::Client::new();
        for (ip, status, body) in cases {
            let response = client
                .get(server.url(&format!("/v1/is-internal?ip={ip}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), status, "{ip}");
            assert_eq!(
                response.headers()["content-type"],
                "application/json",
                "{ip}"
            );
            assert_eq!(response.text().await.unwrap(), body, "{ip}");
        }
    });
}
