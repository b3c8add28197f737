"""The HTTP/JSON API called from Python requests."""

import pytest
import requests

TIMEOUT_SECONDS = 10


def get_ip(server, ip):
    return requests.get(f"{server.http_url}/v1/is-internal", params={"ip": ip}, timeout=TIMEOUT_SECONDS)


@pytest.mark.parametrize(
    "ip, verdict, set_name, network",
    [
        ("192.168.1.10", "internal", "home-lan", "192.168.1.0/24"),
        ("192.168.1.200", "external", "guest-wifi", "192.168.1.192/26"),
        ("10.8.0.7", "internal", "vpn", "10.8.0.0/24"),
        ("2001:db8::7", "internal", "hosts", "2001:db8::7/128"),
        ("8.8.8.8", "external", "", ""),
        ("::ffff:192.168.1.10", "internal", "home-lan", "192.168.1.0/24"),
        ("fe80::1%eth0", "internal", "link-local", "fe80::/10"),
        (" 192.168.1.10 ", "internal", "home-lan", "192.168.1.0/24"),
        ("255.255.255.255", "unknown", "", ""),
        ("::", "unknown", "", ""),
    ],
)
def test_get_address_rules(classifier, ip, verdict, set_name, network):
    response = get_ip(classifier, ip)
    assert response.status_code == 200
    assert response.json() == {
        "ip": ip,
        "verdict": verdict,
        "internal": verdict == "internal",
        "set": set_name,
        "network": network,
        "generation": 1,
    }


@pytest.mark.parametrize("ip", ["10.1.2.3:8080", "10.0.0.0/8", "010.0.0.1", "localhost", "[::1]"])
def test_get_invalid_address_is_400(classifier, ip):
    response = get_ip(classifier, ip)
    assert response.status_code == 400
    body = response.json()
    assert body["verdict"] == "invalid"
    assert body["internal"] is False
    assert f'"{ip}"' in body["error"]


def test_post_batch_keeps_order(classifier):
    ips = ["192.168.1.200", "nonsense", "10.8.0.1", "0.0.0.0"]
    response = requests.post(f"{classifier.http_url}/v1/is-internal", json={"ips": ips}, timeout=TIMEOUT_SECONDS)
    assert response.status_code == 200
    body = response.json()
    assert body["generation"] == 1
    assert [r["ip"] for r in body["results"]] == ips
    assert [r["verdict"] for r in body["results"]] == ["external", "invalid", "internal", "unknown"]
    assert [r["internal"] for r in body["results"]] == [False, False, True, False]
    assert "error" in body["results"][1]
    assert "error" not in body["results"][0]


def test_post_empty_batch(classifier):
    response = requests.post(f"{classifier.http_url}/v1/is-internal", json={"ips": []}, timeout=TIMEOUT_SECONDS)
    assert response.status_code == 200
    assert response.json() == {"results": [], "generation": 1}


@pytest.mark.parametrize("body", ["{", "[]", '{"ips": "10.0.0.1"}', '{"ips": [1]}', "{}"])
def test_post_malformed_json_is_400(classifier, body):
    response = requests.post(
        f"{classifier.http_url}/v1/is-internal",
        data=body,
        headers={"content-type": "application/json"},
        timeout=TIMEOUT_SECONDS,
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("invalid JSON body")


@pytest.mark.parametrize("body", ["", " \n", "\ufeff"])
def test_post_empty_body_is_400(classifier, body):
    response = requests.post(
        f"{classifier.http_url}/v1/is-internal",
        data=body,
        headers={"content-type": "application/json"},
        timeout=TIMEOUT_SECONDS,
    )
    assert response.status_code == 400
    assert response.json()["error"] == (
        'invalid JSON body: the body is empty; send {"ips": ["ADDRESS", ...]}'
    )


def test_unknown_path_and_method(classifier):
    response = requests.get(f"{classifier.http_url}/v1/nothing", timeout=TIMEOUT_SECONDS)
    assert response.status_code == 404
    assert "/v1/nothing" in response.json()["error"]
    response = requests.delete(f"{classifier.http_url}/v1/is-internal", timeout=TIMEOUT_SECONDS)
    assert response.status_code == 405
    assert "DELETE" in response.json()["error"]


def test_health_and_readiness(classifier):
    assert requests.get(f"{classifier.http_url}/healthz", timeout=TIMEOUT_SECONDS).json() == {"status": "ok"}
    ready = requests.get(f"{classifier.http_url}/readyz", timeout=TIMEOUT_SECONDS)
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "generation": 1,
        "last_reload_error": "",
        "watcher": {"healthy": True, "error": ""},
    }


@pytest.mark.parametrize(
    "method, headers",
    [("POST", {"Content-Type": "application/json"}), ("GET", {})],
)
def test_grpc_path_without_grpc_type_is_415(classifier, method, headers):
    response = requests.request(
        method,
        f"{classifier.http_url}/ipclass.v1.IpClassifier/IsInternal",
        headers=headers,
        data='{"ips": ["192.168.1.10"]}' if method == "POST" else None,
        timeout=TIMEOUT_SECONDS,
    )
    assert response.status_code == 415
    message = response.json()["error"]
    assert message.startswith(f"/ipclass.v1.IpClassifier/IsInternal is a gRPC method, and this {method} request has ")
    assert "content-type application/grpc" in message
    assert "/v1/is-internal" in message
