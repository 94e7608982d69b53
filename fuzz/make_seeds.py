#!/usr/bin/env python3
"""Writes fuzz/seeds/*: the committed seed inputs of the fuzz targets (see fuzz/README.md).

Re-run after changing an input layout: `python3 fuzz/make_seeds.py` (needs openssl on PATH for
the session tokens signed with tests/fixtures/keys/instance_a.pem). The output is the same on
every run (RSA PKCS#1 v1.5 signatures are deterministic).
"""
import base64, json, os, subprocess, shutil, hmac, hashlib, glob

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = f"{ROOT}/fuzz/seeds"
for t in ("webhook_verify", "event_parse", "session_token"):
    shutil.rmtree(f"{SEEDS}/{t}", ignore_errors=True)
    os.makedirs(f"{SEEDS}/{t}")

def put(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(f"{SEEDS}/{target}/{name}", "wb") as f:
        f.write(data)

# ---- webhook_verify: flags byte, then id \n timestamp \n signature \n body
def wh(flags, id_, ts, sig, body):
    parts = [x if isinstance(x, bytes) else str(x).encode() for x in (id_, ts, sig, body)]
    return bytes([flags]) + b"\n".join(parts)

vectors = json.load(open(f"{ROOT}/tests/fixtures/svix-vectors.json"))
extra = json.load(open(f"{ROOT}/tests/fixtures/svix-vectors-extra.json"))
n = 0
for i, v in enumerate(vectors):
    put("webhook_verify", f"vector{i+1}-raw", wh(0x00, v["msg_id"], v["timestamp"], v["signature"], v["payload"]))
for i, v in enumerate(extra):
    if v["payload"] is None:
        continue  # the 256 KiB..1 MiB payload_repeat vectors: too big for a seed
    put("webhook_verify", f"extra{i+1}-raw", wh(0x00, v["msg_id"], v["timestamp"], v["signature"], v["payload"]))
v = vectors[1]  # the one made with the fuzzed verifier's secret
put("webhook_verify", "vector2-raw-webhook-names", wh(0x07, v["msg_id"], v["timestamp"], v["signature"], v["payload"]))
put("webhook_verify", "vector2-raw-decoys", wh(0x08, v["msg_id"], v["timestamp"], v["signature"], v["payload"]))
put("webhook_verify", "vector2-raw-multi-sig", wh(0x00, v["msg_id"], v["timestamp"], "v1a,abc v1,AAAA " + v["signature"] + " v2,x", v["payload"]))
put("webhook_verify", "raw-id-only", b"\x00msg_only")
put("webhook_verify", "raw-empty-fields", b"\x00\n\n\n")
put("webhook_verify", "raw-obs-text-id", wh(0x00, b"msg_\xe9", v["timestamp"], v["signature"], v["payload"]))
put("webhook_verify", "raw-bad-timestamp", wh(0x00, v["msg_id"], "+1614265330x", v["signature"], v["payload"]))
put("webhook_verify", "raw-long-id", wh(0x00, "m" * 256, v["timestamp"], v["signature"], v["payload"]))
for i, v in enumerate(vectors):
    put("webhook_verify", f"vector{i+1}-signed", wh(0x10, v["msg_id"], "", "", v["payload"]))
v = vectors[0]
put("webhook_verify", "signed-rotating", wh(0x30, v["msg_id"], "", "", v["payload"]))
put("webhook_verify", "signed-extra-sigs", wh(0x50, v["msg_id"], "", v["signature"] + " v1,garbage v1a,x", v["payload"]))
put("webhook_verify", "signed-webhook-names-decoys", wh(0x1f, v["msg_id"], "", "", v["payload"]))
put("webhook_verify", "signed-svix-names-decoys", wh(0x18, v["msg_id"], "", "", v["payload"]))
put("webhook_verify", "signed-offset-fresh", wh(0x90, v["msg_id"], "-290", "", v["payload"]))
put("webhook_verify", "signed-offset-old", wh(0x90, v["msg_id"], "-400", "", v["payload"]))
put("webhook_verify", "signed-offset-future", wh(0x90, v["msg_id"], "400", "", v["payload"]))
put("webhook_verify", "signed-body-not-utf8", wh(0x10, "msg_bin", "", "", b"{\"a\":\"\xff\xfe\"}"))
put("webhook_verify", "signed-body-newlines", wh(0x10, "msg_nl", "", "", b"{\n  \"type\": \"user.created\"\n}\n"))
for path in sorted(glob.glob(f"{ROOT}/tests/fixtures/clerk/user.*.json")):
    name = os.path.basename(path)[:-5]
    put("webhook_verify", f"signed-{name}", wh(0x10, "msg_2g7np7Hrk0SN6kj5EDMLDaKNL0S", "", "", open(path, "rb").read()))

# ---- event_parse: Clerk's published payloads, plus edges of the rules
for path in sorted(glob.glob(f"{ROOT}/tests/fixtures/clerk/*.json")):
    put("event_parse", os.path.basename(path), open(path, "rb").read())
def ev(t, data):
    return json.dumps({"type": t, "data": data}, separators=(",", ":"))
put("event_parse", "min-user-created", ev("user.created", {"id": "user_1", "updated_at": 1}))
put("event_parse", "user-updated-primary-email", ev("user.updated", {
    "id": "user_1", "updated_at": 1716883200000, "created_at": 1716883200000,
    "primary_email_address_id": "idn_2",
    "email_addresses": [{"id": "idn_1", "email_address": "a@example.com"},
                        {"id": "idn_2", "email_address": "b@example.com"}],
    "first_name": " Ada ", "last_name": "", "username": "", "image_url": None}))
put("event_parse", "updated-at-max", ev("user.updated", {"id": "u", "updated_at": 253402300799999, "created_at": -1}))
put("event_parse", "updated-at-too-big", ev("user.updated", {"id": "u", "updated_at": 253402300800000}))
put("event_parse", "updated-at-float", ev("user.created", {"id": "u", "updated_at": 1.5e3}))
put("event_parse", "user-no-id", ev("user.created", {"id": "", "updated_at": 5}))
put("event_parse", "user-bad-field-type", ev("user.created", {"id": "u", "updated_at": 5, "first_name": 7}))
put("event_parse", "deleted-no-id", ev("user.deleted", {"deleted": True}))
put("event_parse", "deleted-null-id", ev("user.deleted", {"id": None}))
put("event_parse", "data-not-object", '{"type":"user.created","data":[1,2]}')
put("event_parse", "type-not-string", '{"type":1,"data":{}}')
put("event_parse", "unicode-escapes", '{"type":"user.\\u0063reated","data":{"id":"\\ud83d\\ude00","updated_at":9,"first_name":"\\u0000"}}')
put("event_parse", "duplicate-keys", '{"type":"session.created","type":"user.created","data":{"id":"a","id":"b","updated_at":1}}')

# ---- session_token: JWT-shaped strings
def b64(b):
    if isinstance(b, str):
        b = b.encode()
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def j(o):
    return json.dumps(o, separators=(",", ":"))
claims = {"sub": "user_1", "sid": "sess_1", "iat": 1700000000, "nbf": 1700000000, "exp": 1700003600}
put("session_token", "alg-none", f"{b64(j({'alg':'none','typ':'JWT'}))}.{b64(j(claims))}.")
hs = f"{b64(j({'alg':'HS256','typ':'JWT'}))}.{b64(j(claims))}"
put("session_token", "hs256", hs + "." + b64(hmac.new(b"secret", hs.encode(), hashlib.sha256).digest()))
put("session_token", "rs256-random-sig", f"{b64(j({'alg':'RS256','kid':'ins_1','typ':'JWT'}))}.{b64(j(claims))}.{b64(hashlib.sha256(b'not a signature').digest() * 8)}")
put("session_token", "rs256-other-category", f"{b64(j({'alg':'RS256','cat':'cl_B7d4PD111AAA_m2m'}))}.{b64(j(claims))}.c2ln")
put("session_token", "bearer-junk", "Bearer a.b.c")
put("session_token", "four-parts", "a.b.c.d")
put("session_token", "padded", f"{base64.urlsafe_b64encode(j({'alg':'RS256'}).encode()).decode()}.e30=.AA==")
put("session_token", "struct-rs256", j({"alg": "RS256", "typ": "JWT", "cat": "cl_B7d4PD111AAA"}) + "\0" + j(claims) + "\0" + "sig")
put("session_token", "struct-none", j({"alg": "none"}) + "\0" + j({"sub": "x", "exp": 99999999999}) + "\0")
put("session_token", "struct-bad-json", '{"alg":"RS256","kid":1}\0{"exp":"soon"}\0\xff')
# Genuinely signed with the fixture key (instance_a), but never valid: the fuzzer keeps the
# claim checks behind the signature covered. Each must be refused: expired, not valid until
# year 9999, no subject, pending, issued in the future (all until year 9999).
def rs256(header, claims):
    signing_input = f"{b64(j(header))}.{b64(j(claims))}"
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{ROOT}/tests/fixtures/keys/instance_a.pem"],
                         input=signing_input.encode(), capture_output=True, check=True).stdout
    return signing_input + "." + b64(sig)
far = 253402300799
put("session_token", "signed-expired", rs256({"alg": "RS256", "typ": "JWT"}, claims))
put("session_token", "signed-not-yet-valid", rs256({"alg": "RS256"}, {"sub": "user_1", "nbf": far - 10, "exp": far}))
put("session_token", "signed-no-subject", rs256({"alg": "RS256"}, {"iat": 1700000000, "exp": far}))
put("session_token", "signed-pending", rs256({"alg": "RS256", "cat": "cl_B7d4PD111AAA"}, {"sub": "user_1", "sts": "pending", "exp": far}))
put("session_token", "signed-iat-future", rs256({"alg": "RS256"}, {"sub": "user_1", "iat": far - 10, "exp": far}))
put("session_token", "signed-exp-string", rs256({"alg": "RS256"}, {"sub": "user_1", "exp": "far"}))
