"""helm test: deposit to a fresh wallet through the API, then read it back until it shows.

Runs in the API image with only the standard library. Environment: WALLET_API_URL (the API
Service), WALLET_TEST_TIMEOUT_SECONDS, WALLET_TEST_AUTH (jwt when the API requires bearer tokens)
and WALLET_TEST_TOKEN_FILE (a token for the test, optional). Exits 0 when GET /details returns
exactly the expected document, non-zero otherwise (with what it saw). With authentication on it
first checks that requests without a token are refused (401); without a token file that is all
it can check, and it says so.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

base = os.environ["WALLET_API_URL"].rstrip("/")
timeout = float(os.environ.get("WALLET_TEST_TIMEOUT_SECONDS", "60"))
wallet = "helm-test-" + uuid.uuid4().hex[:12]  # fresh: reruns never see an earlier balance
# The exact document of the HTTP contract: compact JSON, this key order, no decimal point.
expected = json.dumps({"WalletID": wallet, "Balance": 8000, "AboveThreshold": False}, separators=(",", ":"))


auth = os.environ.get("WALLET_TEST_AUTH", "none") == "jwt"
token_file = os.environ.get("WALLET_TEST_TOKEN_FILE")
token = open(token_file, encoding="utf-8").read().strip() if token_file else None


def call(method, path, doc=None, bearer=None):
    data = None if doc is None else json.dumps(doc).encode()
    headers = {"Content-Type": "application/json"}
    if bearer:
        headers["Authorization"] = "Bearer " + bearer
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


deadline = time.monotonic() + timeout
status, body = 0, ""
if auth:
    while time.monotonic() < deadline:  # the API may not be listening yet right after an install
        try:
            refused = [
                call("POST", "/deposit", {"WalletID": wallet, "Amount": 8000})[0],
                call("GET", "/details/" + wallet)[0],
            ]
            break
        except OSError as exc:
            refused = [0, str(exc)]
            time.sleep(1)
    if refused != [401, 401]:
        sys.exit(f"authentication is on, but requests without a token were answered {refused}, not [401, 401]")
    print("requests without a token are refused (401)")
    if not token:
        print("no tests.bearerToken: the deposit path through Kafka was not checked")
        sys.exit(0)
while time.monotonic() < deadline:  # the API may still be catching up right after an install
    try:
        status, body = call("POST", "/deposit", {"WalletID": wallet, "Amount": 8000}, bearer=token)
    except OSError as exc:
        status, body = 0, str(exc)
    if status == 202:
        break
    time.sleep(1)
else:
    sys.exit(f"POST /deposit never accepted: last answer {status} {body}")
print(f"deposit accepted: {body}")

while time.monotonic() < deadline:
    try:
        status, body = call("GET", "/details/" + wallet, bearer=token)
    except OSError as exc:
        status, body = 0, str(exc)
    if status == 200 and body == expected:
        print(f"read back: {body}")
        sys.exit(0)
    time.sleep(0.5)
sys.exit(f"GET /details/{wallet} never returned {expected}: last answer {status} {body}")
