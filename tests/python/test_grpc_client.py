"""The gRPC API called from Python grpcio, with stubs generated from proto/."""

import ipaddress

import grpc
import pytest

DEFAULT_ROUTE_CONFIG = """
[sets.everything]
internal = true
networks = ["0.0.0.0/0", "::/0"]
"""


@pytest.fixture
def stub_for(ipclass_stubs):
    """Return a function that opens an IpClassifier stub to a server."""
    _, pb2_grpc = ipclass_stubs
    channels = []

    def open_stub(server):
        channel = grpc.insecure_channel(server.address)
        channels.append(channel)
        return pb2_grpc.IpClassifierStub(channel)

    yield open_stub
    for channel in channels:
        channel.close()


def classify(ipclass_stubs, stub, ips):
    pb2, _ = ipclass_stubs
    return stub.IsInternal(pb2.IsInternalRequest(ips=ips), timeout=10)


def verdict_name(ipclass_stubs, result):
    pb2, _ = ipclass_stubs
    return pb2.Verdict.Name(result.verdict)


@pytest.mark.parametrize(
    "ip, verdict, set_name, network",
    [
        ("192.168.1.10", "VERDICT_INTERNAL", "home-lan", "192.168.1.0/24"),
        ("192.168.1.200", "VERDICT_EXTERNAL", "guest-wifi", "192.168.1.192/26"),
        ("10.8.0.7", "VERDICT_INTERNAL", "vpn", "10.8.0.0/24"),
        ("203.0.113.7", "VERDICT_INTERNAL", "hosts", "203.0.113.7/32"),
        ("2001:db8::7", "VERDICT_INTERNAL", "hosts", "2001:db8::7/128"),
        ("8.8.8.8", "VERDICT_EXTERNAL", "", ""),
        ("::ffff:192.168.1.10", "VERDICT_INTERNAL", "home-lan", "192.168.1.0/24"),
        ("::ffff:c0a8:1c8", "VERDICT_EXTERNAL", "guest-wifi", "192.168.1.192/26"),
        ("::192.168.1.10", "VERDICT_EXTERNAL", "", ""),
        ("fe80::1%eth0", "VERDICT_INTERNAL", "link-local", "fe80::/10"),
        ("  192.168.1.10\n", "VERDICT_INTERNAL", "home-lan", "192.168.1.0/24"),
        ("0.0.0.0", "VERDICT_UNKNOWN", "", ""),
        ("::", "VERDICT_UNKNOWN", "", ""),
        ("255.255.255.255", "VERDICT_UNKNOWN", "", ""),
    ],
)
def test_address_rules(ipclass_stubs, stub_for, classifier, ip, verdict, set_name, network):
    response = classify(ipclass_stubs, stub_for(classifier), [ip])
    assert response.generation == 1
    assert len(response.results) == 1
    result = response.results[0]
    assert result.ip == ip
    assert verdict_name(ipclass_stubs, result) == verdict
    assert result.internal == (verdict == "VERDICT_INTERNAL")
    assert result.set == set_name
    assert result.network == network
    assert result.error == ""


@pytest.mark.parametrize(
    "ip, reason",
    [
        ("10.1.2.3:8080", "remove the port"),
        ("[::1]:443", "remove the brackets"),
        ("10.0.0.0/8", "CIDR"),
        ("010.0.0.1", "leading zeros"),
        ("localhost", "host names are not resolved"),
        ("1.2.3", "shorthand IPv4"),
    ],
)
def test_invalid_address_is_never_internal(ipclass_stubs, stub_for, start_classifier, ip, reason):
    server = start_classifier(DEFAULT_ROUTE_CONFIG)
    result = classify(ipclass_stubs, stub_for(server), [ip]).results[0]
    assert verdict_name(ipclass_stubs, result) == "VERDICT_INVALID"
    assert result.internal is False
    assert result.set == ""
    assert f'"{ip}"' in result.error
    assert reason in result.error


def test_empty_text_is_invalid(ipclass_stubs, stub_for, classifier):
    results = classify(ipclass_stubs, stub_for(classifier), ["", "  "]).results
    assert [verdict_name(ipclass_stubs, r) for r in results] == ["VERDICT_INVALID"] * 2
    assert all("empty address" in r.error for r in results)


def test_sentinels_are_unknown_under_default_route(ipclass_stubs, stub_for, start_classifier):
    server = start_classifier(DEFAULT_ROUTE_CONFIG)
    ips = ["0.0.0.0", "::", "255.255.255.255", "1.2.3.4"]
    results = classify(ipclass_stubs, stub_for(server), ips).results
    verdicts = [verdict_name(ipclass_stubs, r) for r in results]
    assert verdicts == ["VERDICT_UNKNOWN"] * 3 + ["VERDICT_INTERNAL"]


def test_results_keep_request_order(ipclass_stubs, stub_for, classifier):
    ips = [f"192.168.1.{i}" for i in range(256)] + ["bogus", "::1"]
    results = classify(ipclass_stubs, stub_for(classifier), ips).results
    assert [r.ip for r in results] == ips
    assert results[10].internal is True
    assert results[200].internal is False
    assert verdict_name(ipclass_stubs, results[256]) == "VERDICT_INVALID"


def test_empty_batch_returns_empty_result(ipclass_stubs, stub_for, classifier):
    response = classify(ipclass_stubs, stub_for(classifier), [])
    assert list(response.results) == []
    assert response.generation == 1


def test_batch_over_limit_is_invalid_argument(ipclass_stubs, stub_for, start_classifier):
    server = start_classifier(DEFAULT_ROUTE_CONFIG, "--max-batch-size", "2")
    stub = stub_for(server)
    assert len(classify(ipclass_stubs, stub, ["1.1.1.1", "2.2.2.2"]).results) == 2
    with pytest.raises(grpc.RpcError) as raised:
        classify(ipclass_stubs, stub, ["1.1.1.1", "2.2.2.2", "3.3.3.3"])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "exceeds the maximum of 2" in raised.value.details()


def test_packed_form(ipclass_stubs, stub_for, classifier):
    pb2, _ = ipclass_stubs
    ipv4 = b"".join(ipaddress.IPv4Address(a).packed for a in ["192.168.1.10", "192.168.1.200", "0.0.0.0"])
    ipv6 = b"".join(ipaddress.IPv6Address(a).packed for a in ["::ffff:192.168.1.10", "2001:db8::1"])
    response = stub_for(classifier).IsInternalPacked(
        pb2.IsInternalPackedRequest(ipv4=ipv4, ipv6=ipv6), timeout=10
    )
    assert list(response.ipv4_verdicts) == [pb2.VERDICT_INTERNAL, pb2.VERDICT_EXTERNAL, pb2.VERDICT_UNKNOWN]
    assert list(response.ipv6_verdicts) == [pb2.VERDICT_INTERNAL, pb2.VERDICT_EXTERNAL]
    with pytest.raises(grpc.RpcError) as raised:
        stub_for(classifier).IsInternalPacked(pb2.IsInternalPackedRequest(ipv4=b"\x0a\x00\x00"), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a multiple of 4" in raised.value.details()


@pytest.mark.parametrize(
    "method, request_type, response_type, first, second",
    [
        ("IsInternal", "IsInternalRequest", "IsInternalResponse", {"ips": ["192.168.1.10"]}, {"ips": ["8.8.8.8"]}),
        ("IsInternalPacked", "IsInternalPackedRequest", "IsInternalPackedResponse", {"ipv4": b"\xc0\xa8\x01\x0a"}, {}),
    ],
)
def test_second_request_message_is_rejected(ipclass_stubs, classifier, method, request_type, response_type, first, second):
    pb2, _ = ipclass_stubs
    request, response = getattr(pb2, request_type), getattr(pb2, response_type)
    with grpc.insecure_channel(classifier.address) as channel:
        # The stubs call these methods as unary, so a raw stream call sends two.
        call = channel.stream_unary(
            f"/ipclass.v1.IpClassifier/{method}",
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )
        answer = call(iter([request(**first)]), timeout=10)
        assert answer.generation == 1
        with pytest.raises(grpc.RpcError) as raised:
            call(iter([request(**first), request(**second)]), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert raised.value.details() == (
        "the call sent more than one request message, and its method takes one; send the whole batch in one message"
    )
