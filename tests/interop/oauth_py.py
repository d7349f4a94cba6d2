# tests/interop/oauth_py.py - OAuth interop: the official Python MCP SDK 2.x (mcp==2.3.0, installed by
# scripts/lib.sh) authorizes itself against Portcullis acting as an OAuth 2.1 resource server, then
# runs a short MCP scenario. Driven by scripts/oauth-interop.sh.
# Usage: python oauth_py.py URL [MODE]
#   URL   the Streamable HTTP endpoint (/mcp) of a Portcullis with [auth] mode = "jwt"
#   MODE  authcode (default)  mcp.client.auth.OAuthClientProvider: authorization code + PKCE, client
#                             registered by dynamic client registration (RFC 7591), headless
#                             redirect/callback handlers
#         client-credentials  mcp.client.auth.extensions.client_credentials.ClientCredentialsOAuthProvider
#                             (client_secret_basic)
# The authorization server is found only through the 401 from URL, its WWW-Authenticate
# resource_metadata, the protected resource metadata (RFC 9728; the SDK checks that its `resource`
# matches URL) and the AS metadata (RFC 8414). The "browser" of the code flow is one GET of the
# authorization URL without following redirects: the test IdP approves at once and answers 303 to
# redirect_uri?code=...&state=...&iss=..., which the callback handler hands back to the SDK.
# Env: OAUTH_ISSUER (optional: the issuer the client trusts; client-credentials passes it as the
#      provider's issuer, every mode checks that the PRM led there),
#      OAUTH_CLIENT_ID / OAUTH_CLIENT_SECRET (client-credentials; default mcp-test-client / mcp-test-secret),
#      OAUTH_SCOPE (client-credentials provider scope; default mcp:tools),
#      OAUTH_REDIRECT_URI (code flow; default http://127.0.0.1:3000/callback, registered at the test IdP).
# Steps (each printed as "ok <step>" or "FAIL <step>: reason"): initialize (the OAuth flow runs inside
# it), authorize (code flow: what the browser saw), discovery (401 -> PRM -> AS, from the HTTP log),
# token (aud = PRM resource, scope), tools/list (has echo), tools/call echo, close, session DELETE.
# Exit 1 if any step failed.
import base64
import json
import logging
import os
import re
import sys
from contextlib import AsyncExitStack
from importlib.metadata import version
from urllib.parse import parse_qs, urljoin, urlsplit

import anyio

STEP_TIMEOUT = 20  # seconds per step
MCP_VERSION = version("mcp")
MODES = ("authcode", "client-credentials")

if not 2 <= len(sys.argv) <= 3 or (len(sys.argv) == 3 and sys.argv[2] not in MODES):
    print(f"usage: python {sys.argv[0]} URL [{'|'.join(MODES)}]", file=sys.stderr)
    sys.exit(2)
URL = sys.argv[1]
MODE = sys.argv[2] if len(sys.argv) == 3 else "authcode"
if not MCP_VERSION.startswith("2."):
    print(f"oauth_py.py needs mcp 2.x; this interpreter has mcp {MCP_VERSION}", file=sys.stderr)
    sys.exit(2)

EXPECTED_ISSUER = os.environ.get("OAUTH_ISSUER") or None
REDIRECT_URI = os.environ.get("OAUTH_REDIRECT_URI") or "http://127.0.0.1:3000/callback"
log = []  # every HTTP exchange of the SDK's client (auth flow included): dicts method/url/status/www_auth/json
failed = 0


class SdkLog(logging.Handler):
    """Keeps the SDK's last warning/error: OAuth flow errors are logged there before they propagate."""

    last = None

    def emit(self, record):
        msg = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            msg += f": {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        SdkLog.last = " | ".join(msg.splitlines())[:300]


logging.getLogger("mcp").addHandler(SdkLog(logging.WARNING))
logging.getLogger("mcp").propagate = False


def report(name, note=None, error=None):
    global failed
    if error is not None:
        failed += 1
        while getattr(error, "exceptions", None):  # unwrap (Base)ExceptionGroup
            error = error.exceptions[0]
        msg = " | ".join(str(error).splitlines())[:400]
        # The SDK's log explains cancellations and bare errors; assertions here are self-explanatory.
        if SdkLog.last and SdkLog.last not in msg and (
                isinstance(error, anyio.get_cancelled_exc_class()) or not msg or not isinstance(error, AssertionError)):
            msg += f" (SDK log: {SdkLog.last})"
        print(f"FAIL {name}: {type(error).__name__}: {msg}" if not isinstance(error, AssertionError)
              else f"FAIL {name}: {msg}", flush=True)
    else:
        print(f"ok {name}{' - ' + note if note else ''}", flush=True)


async def step(name, fn):
    try:
        with anyio.fail_after(STEP_TIMEOUT):
            note = await fn()
    except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
        report(name, error=e)
        return False
    report(name, note)
    return True


def claims_of(jwt):
    parts = str(jwt).split(".")
    assert len(parts) == 3, "the access token is not a JWT"
    return json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))


def text_of(blocks):
    return "".join(getattr(b, "text", "") for b in blocks or [] if getattr(b, "type", None) == "text")


class MemoryStorage:
    """mcp.client.auth.TokenStorage in memory."""

    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


class HeadlessBrowser:
    """redirect_handler + callback_handler: one GET of the authorization URL, the code read from Location."""

    def __init__(self):
        self.authorization_url = None
        self.result = None

    async def redirect(self, authorization_url):
        import httpx2
        from mcp.shared.auth import AuthorizationCodeResult

        self.authorization_url = authorization_url
        async with httpx2.AsyncClient(follow_redirects=False, timeout=STEP_TIMEOUT) as http:
            r = await http.get(authorization_url)
        loc = r.headers.get("location")
        if not (300 <= r.status_code < 400 and loc):
            raise RuntimeError(f"authorization endpoint answered HTTP {r.status_code} without a redirect: {r.text[:200]}")
        back = urlsplit(urljoin(authorization_url, loc))
        if f"{back.scheme}://{back.netloc}{back.path}" != REDIRECT_URI:
            raise RuntimeError(f"redirected to {back.scheme}://{back.netloc}{back.path}, not {REDIRECT_URI}")
        q = {k: v[0] for k, v in parse_qs(back.query).items()}
        if "error" in q:
            raise RuntimeError(f"authorization error {q['error']}: {q.get('error_description')}")
        self.result = AuthorizationCodeResult(code=q.get("code", ""), state=q.get("state"), iss=q.get("iss"))

    async def callback(self):
        if self.result is None:
            raise RuntimeError("the redirect handler got no authorization response")
        return self.result


def make_provider(storage, browser):
    if MODE == "client-credentials":
        from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider

        return ClientCredentialsOAuthProvider(
            server_url=URL,
            storage=storage,
            client_id=os.environ.get("OAUTH_CLIENT_ID") or "mcp-test-client",
            client_secret=os.environ.get("OAUTH_CLIENT_SECRET") or "mcp-test-secret",
            scope=os.environ.get("OAUTH_SCOPE") or "mcp:tools",
            **({"issuer": EXPECTED_ISSUER} if EXPECTED_ISSUER else {}),
        )
    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import OAuthClientMetadata

    return OAuthClientProvider(
        server_url=URL,
        client_metadata=OAuthClientMetadata(
            client_name="portcullis-oauth-interop-py (authcode)",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
    )


def http_client(provider):
    from mcp.shared._httpx_utils import create_mcp_http_client

    async def record(resp):
        e = {"method": resp.request.method, "url": str(resp.request.url), "status": resp.status_code,
             "www_auth": resp.headers.get("www-authenticate")}
        if "/.well-known/" in e["url"] and resp.status_code == 200:
            await resp.aread()
            try:
                e["json"] = resp.json()
            except ValueError:
                pass
        log.append(e)

    client = create_mcp_http_client(auth=provider)
    client.event_hooks["response"].append(record)
    return client


async def main():
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    storage, browser = MemoryStorage(), HeadlessBrowser()
    stack = AsyncExitStack()
    c = None

    async def initialize():
        nonlocal c
        provider = make_provider(storage, browser)
        http = await stack.enter_async_context(http_client(provider))
        transport = streamable_http_client(URL, http_client=http, terminate_on_close=True)
        c = await stack.enter_async_context(Client(transport, mode="legacy", read_timeout_seconds=STEP_TIMEOUT))
        i = c.server_info
        return f"{i.name if i else '?'} {i.version if i else ''}, mcp {MCP_VERSION} ({MODE}), protocol {c.protocol_version}"

    # No fail_after around the connect: the exit stack holds task groups that must be closed in order.
    try:
        note = await initialize()
        report("initialize", note)
    except Exception as e:  # noqa: BLE001 - the OAuth flow runs inside this step
        report("initialize", error=e)
        try:
            await stack.aclose()
        except Exception:  # noqa: BLE001 - the first error is the one reported
            pass
        c = None

    if MODE == "authcode":
        async def authorize():
            assert browser.authorization_url, "the SDK never called the redirect handler"
            q = {k: v[0] for k, v in parse_qs(urlsplit(browser.authorization_url).query).items()}
            assert q.get("code_challenge_method") == "S256" and q.get("code_challenge"), "no S256 PKCE challenge"
            assert browser.result and browser.result.code, "no authorization code"
            cid = storage.client_info.client_id if storage.client_info else None
            return (f"client {cid}, resource={q.get('resource')}, scope=\"{q.get('scope')}\", "
                    f"iss={browser.result.iss}")

        await step("authorize", authorize)

    prm = {}

    async def discovery():
        first = next((e for e in log if e["url"] == URL), None)
        assert first, f"no request to {URL} was logged"
        assert first["status"] == 401, f"the first request to {URL} answered HTTP {first['status']}, want 401"
        www = first["www_auth"] or ""
        m = re.search(r'resource_metadata="([^"]+)"', www)
        assert m, f"401 without WWW-Authenticate resource_metadata: {www}"
        got = next((e for e in log if e["method"] == "GET" and e["url"] == m.group(1)), None)
        assert got, f"the SDK never fetched the resource_metadata URL {m.group(1)}"
        assert got["status"] == 200 and "json" in got, f"GET {m.group(1)} answered HTTP {got['status']}"
        prm.update(got["json"])
        assert prm.get("resource") == URL, f"PRM resource {prm.get('resource')} is not the server URL {URL}"
        servers = prm.get("authorization_servers") or []
        assert servers, "PRM lists no authorization_servers"
        a_s = servers[0]
        if EXPECTED_ISSUER:
            assert a_s == EXPECTED_ISSUER, f"PRM authorization_servers[0] {a_s} is not the expected issuer {EXPECTED_ISSUER}"
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(a_s))
        # The AS metadata, not the PRM: with the built-in dev server both live on the same origin.
        meta = next((e for e in log if e["method"] == "GET" and e["url"].startswith(f"{origin}/.well-known/")
                     and "/.well-known/oauth-protected-resource" not in e["url"]
                     and e["status"] == 200 and "json" in e), None)
        assert meta, f"no authorization server metadata fetched from {origin}"
        assert meta["json"].get("issuer") == a_s, f"AS metadata issuer {meta['json'].get('issuer')} != {a_s}"
        tok = [e for e in log if e["method"] == "POST" and e["url"] == meta["json"].get("token_endpoint")]
        assert tok and all(e["status"] == 200 for e in tok), \
            f"token endpoint: HTTP {','.join(str(e['status']) for e in tok) or 'never called'}"
        reg = next((e for e in log if e["method"] == "POST" and e["url"] == meta["json"].get("registration_endpoint")), None)
        if MODE == "authcode":
            assert reg and reg["status"] in (200, 201), f"dynamic client registration: HTTP {reg['status'] if reg else 'never called'}"
        else:
            assert not reg, "the SDK registered a client although it had credentials"
        flow = [f"401 ({www.removeprefix('Bearer ')})", f"PRM {m.group(1)}", f"AS {a_s} ({meta['url'][len(origin):]})"]
        if reg:
            flow.append(f"DCR {reg['status']}")
        flow.append(f"token 200 x{len(tok)}")
        return " -> ".join(flow)

    await step("discovery", discovery)

    async def token():
        t = storage.tokens
        assert t and t.access_token, "the provider stored no access token"
        cl = claims_of(t.access_token)
        assert prm, "no PRM to compare with"
        aud = cl.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        assert prm["resource"] in auds, f"aud {aud!r} does not name the PRM resource {prm['resource']}"
        assert cl.get("iss") == prm["authorization_servers"][0], f"iss {cl.get('iss')} != {prm['authorization_servers'][0]}"
        scopes = (cl.get("scope") or t.scope or "").split()
        for s in prm.get("scopes_supported") or []:
            assert s in scopes, f"token scope {' '.join(scopes)!r} lacks {s}"
        return f"iss {cl.get('iss')}, aud {json.dumps(aud)}, sub {cl.get('sub')}, client_id {cl.get('client_id')}, scope \"{' '.join(scopes)}\""

    await step("token", token)

    if c is None:
        return

    async def list_tools():
        tools = (await c.list_tools()).tools
        assert any(t.name == "echo" for t in tools), f"no tool named echo among {len(tools)} tools"
        return f"{len(tools)} tools, echo present"

    async def call_echo():
        r = await c.call_tool("echo", {"message": "hello portcullis oauth"})
        text = text_of(r.content)
        assert getattr(r, "is_error", None) is not True, f"isError: {text[:200]}"
        assert "hello portcullis oauth" in text, f"result text lacks 'hello portcullis oauth': {text[:200]!r}"
        return repr(text)[:80]

    await step("tools/list", list_tools)
    await step("tools/call echo", call_echo)

    n = len(log)
    try:
        await stack.aclose()  # terminate_on_close: the transport sends DELETE with the session id
        report("close")
    except Exception as e:  # noqa: BLE001
        report("close", error=e)
    dels = [e["status"] for e in log[n:] if e["method"] == "DELETE"]
    if not dels:
        report("session DELETE", error=AssertionError("no DELETE was sent (server issued no Mcp-Session-Id?)"))
    elif any(not 200 <= s < 300 for s in dels):
        report("session DELETE", error=AssertionError(f"DELETE answered HTTP {','.join(map(str, dels))} (want 2xx)"))
    else:
        report("session DELETE", f"HTTP {','.join(map(str, dels))}")


try:
    anyio.run(main)
except BaseException as e:  # noqa: BLE001 - anything escaping is a failure
    if isinstance(e, KeyboardInterrupt):
        raise
    report("run", error=e)
sys.exit(1 if failed else 0)
