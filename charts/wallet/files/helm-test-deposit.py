"""helm test: deposit to a fresh wallet through the API, then read it back until it shows.

Runs in the API image with only the standard library. Environment: WALLET_API_URL (the API
Service), WALLET_TEST_TIMEOUT_SECONDS. Exits 0 when GET /details returns exactly the expected
document, non-zero otherwise (with what it saw).
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


def call(method, path, doc=None):
    data = None if doc is None else json.dumps(doc).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


deadline = time.monotonic() + timeout
status, body = 0, ""
while time.monotonic() < deadline:  # the API may still be catching up right after an install
    try:
        status, body = call("POST", "/deposit", {"WalletID": wallet, "Amount": 8000})
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
        status, body = call("GET", "/details/" + wallet)
    except OSError as exc:
        status, body = 0, str(exc)
    if status == 200 and body == expected:
        print(f"read back: {body}")
        sys.exit(0)
    time.sleep(0.5)
sys.exit(f"GET /details/{wallet} never returned {expected}: last answer {status} {body}")
