# Authentik expression policy: passes when ipclass classifies the client
# address as internal.
#
# Paste this file into an expression policy. Authentik runs it as the body of
# a function, so the top-level `return` statements are intended. Bind it to
# the MFA validation stage with "Negate result" on, so the stage runs for
# every client that is not internal, and with a "Failure result" that
# passes (README.md in this folder explains both).
#
# Every failure returns False ("not internal"): a timeout, a refused
# connection, a non-200 response, a body that is not the expected JSON, and
# the verdicts "unknown" and "invalid". Under a negated binding, False means
# the MFA stage runs.

import json
import time

# Base URL of the ipclass HTTP API. A sidecar in the same pod listens on
# loopback; a shared Service would be "http://ipclass.NAMESPACE.svc:50051".
IPCLASS_URL = "http://127.0.0.1:50051"

# Seconds requests waits to connect and then for each read of the response.
# ipclass looks the address up in an in-memory table, so a slow response
# means the service is unwell, and MFA is requested.
CONNECT_TIMEOUT_SECONDS = 0.5
READ_TIMEOUT_SECONDS = 1.0

# Seconds that the whole response may take to arrive once its headers have.
# requests applies the read timeout to each read, so a server that sends a
# byte at a time would hold the login far longer without this bound.
TOTAL_TIMEOUT_SECONDS = 2.0

# Largest response body read. An ipclass response for one address is under
# 300 bytes.
MAX_RESPONSE_BYTES = 4096

# ak_client_ip is only set when the policy runs for an HTTP request.
try:
    client_ip = ak_client_ip
except NameError:
    ak_logger.warning("ipclass: no client address in this policy request, so not internal")
    return False

try:
    deadline = time.monotonic() + TOTAL_TIMEOUT_SECONDS
    response = requests.get(
        IPCLASS_URL + "/v1/is-internal",
        params={"ip": str(client_ip)},
        timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS),
        stream=True,
    )
    received = b""
    try:
        # One byte a read, so that the deadline is checked between any two
        # bytes that arrive.
        for byte in response.iter_content(chunk_size=1):
            received += byte
            if time.monotonic() > deadline:
                raise TimeoutError(f"the response took over {TOTAL_TIMEOUT_SECONDS} s")
            if len(received) > MAX_RESPONSE_BYTES:
                raise ValueError(f"the response is over {MAX_RESPONSE_BYTES} bytes")
    finally:
        response.close()
    body = json.loads(received)
# An exception that escapes this policy makes Authentik use the binding's
# "Failure result", which negation does not flip, so every error is handled
# here. The `requests` object is a Session, not the module, so its exception
# classes are not in scope without an import.
except Exception as error:
    ak_logger.warning(
        "ipclass: request failed, so not internal",
        client_ip=str(client_ip),
        error=repr(error),
    )
    return False

if response.status_code != 200 or not isinstance(body, dict):
    ak_logger.warning(
        "ipclass: unexpected response, so not internal",
        client_ip=str(client_ip),
        status=response.status_code,
    )
    return False

verdict = body.get("verdict")
if verdict == "internal" and body.get("internal") is True:
    ak_logger.debug(
        "ipclass: internal",
        client_ip=str(client_ip),
        set=body.get("set"),
        network=body.get("network"),
    )
    return True
if verdict == "external":
    ak_logger.debug("ipclass: external", client_ip=str(client_ip), set=body.get("set"))
    return False

# "unknown" covers 255.255.255.255, which Authentik passes when it cannot
# determine the client address, and the unspecified addresses 0.0.0.0 and ::.
ak_logger.warning(
    "ipclass: no usable verdict, so not internal",
    client_ip=str(client_ip),
    verdict=verdict,
)
return False
