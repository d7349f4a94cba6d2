// tests/interop/oauth_ts.mjs - OAuth interop: the official TS SDK v1 (@modelcontextprotocol/sdk@1.32.2,
// installed by scripts/lib.sh) authorizes itself against Portcullis acting as an OAuth 2.1 resource
// server, then runs a short MCP scenario. Driven by scripts/oauth-interop.sh.
// Usage: node oauth_ts.mjs URL MODE
//   URL   the Streamable HTTP endpoint (/mcp) of a Portcullis with [auth] mode = "jwt"
//   MODE  client-credentials  ClientCredentialsProvider (client/auth-extensions.js), client_secret_basic
//         authcode            authorization code + PKCE through the SDK's OAuthClientProvider interface,
//                             client registered by dynamic client registration (RFC 7591)
//         authcode-public     the same with the pre-registered public client $OAUTH_PUBLIC_CLIENT_ID
// The authorization server is found only the way a real client finds it: the 401 from URL, its
// WWW-Authenticate resource_metadata, the protected resource metadata (RFC 9728) and the AS metadata
// (RFC 8414). The "browser" of the code flow is a fetch with redirect: 'manual' of the authorization
// URL: the test IdP approves at once and answers 303 to redirect_uri?code=...&state=...&iss=...
// Env: PC_NPM_DIR (dir whose node_modules holds the SDK; default: the "clients" dir of the test cache,
//      ${PORTCULLIS_TEST_CACHE:-~/.cache/portcullis-test}/clients),
//      OAUTH_ISSUER (optional: the issuer the client trusts; client-credentials passes it as the SDK's
//      expectedIssuer, every mode checks that the PRM led there),
//      OAUTH_CLIENT_ID / OAUTH_CLIENT_SECRET (client-credentials; default mcp-test-client / mcp-test-secret),
//      OAUTH_SCOPE (client-credentials provider scope; default mcp:tools),
//      OAUTH_PUBLIC_CLIENT_ID (authcode-public; default mcp-public-client),
//      OAUTH_REDIRECT_URI (code flow; default http://127.0.0.1:3000/callback, registered at the test IdP).
// Steps (each printed as "ok <step>" or "FAIL <step>: reason"): authorize (code flow: the first connect
// must stop at the redirect, then finishAuth), discovery (401 -> PRM -> AS, from the HTTP log), token
// (aud = PRM resource, scope), initialize, tools/list (has echo), tools/call echo, session DELETE, close.
// Exit 1 if any step failed.
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { homedir } from 'node:os';
import { join } from 'node:path';

const npmDir = process.env.PC_NPM_DIR
  || join(process.env.PORTCULLIS_TEST_CACHE || join(homedir(), '.cache', 'portcullis-test'), 'clients');
const req = createRequire(join(npmDir, 'package.json'));
let sdk;
try {
  sdk = {
    ...req('@modelcontextprotocol/sdk/client/index.js'),
    ...req('@modelcontextprotocol/sdk/client/streamableHttp.js'),
    ...req('@modelcontextprotocol/sdk/client/auth.js'),
    ...req('@modelcontextprotocol/sdk/client/auth-extensions.js'),
  };
} catch (e) {
  console.log(`FAIL setup: cannot load @modelcontextprotocol/sdk from ${npmDir} (run scripts/oauth-interop.sh once or set PC_NPM_DIR): ${e.message.split('\n')[0]}`);
  process.exit(1);
}
const { Client, StreamableHTTPClientTransport, ClientCredentialsProvider, UnauthorizedError } = sdk;

const MODES = ['client-credentials', 'authcode', 'authcode-public'];
const [url, mode] = process.argv.slice(2);
if (!url || !MODES.includes(mode)) {
  console.error(`usage: node oauth_ts.mjs URL {${MODES.join('|')}}`);
  process.exit(2);
}
const env = process.env;
const expectedIssuer = env.OAUTH_ISSUER || undefined;
const redirectUri = env.OAUTH_REDIRECT_URI || 'http://127.0.0.1:3000/callback';

// Every HTTP exchange of the transport and of the SDK's auth code: {method, url, status, wwwAuth, json}.
// Metadata bodies (.well-known) are kept to check discovery afterwards.
const log = [];
const fetchLog = async (u, init) => {
  const r = await fetch(u, init);
  const href = String(u instanceof Request ? u.url : u);
  const e = { method: init?.method ?? 'GET', url: href, status: r.status, wwwAuth: r.headers.get('www-authenticate') };
  if (href.includes('/.well-known/') && r.ok) e.json = await r.clone().json().catch(() => undefined);
  log.push(e);
  return r;
};

let failed = 0;
const STEP_TIMEOUT_MS = 20000;
async function step(name, fn) {
  let timer;
  const timeout = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new Error(`timeout ${STEP_TIMEOUT_MS / 1000}s`)), STEP_TIMEOUT_MS);
  });
  try {
    const note = await Promise.race([fn(), timeout]);
    console.log(`ok ${name}${note ? ` - ${note}` : ''}`);
    return true;
  } catch (e) {
    failed++;
    const cause = e?.cause?.message ?? e?.cause?.code;
    const msg = `${e?.name && e.name !== 'Error' ? `${e.name}: ` : ''}${e?.message ?? e}${cause && !String(e?.message).includes(cause) ? ` (${cause})` : ''}`;
    console.log(`FAIL ${name}: ${msg.split('\n').join(' | ').slice(0, 400)}`);
    return false;
  } finally {
    clearTimeout(timer);
  }
}
const check = (cond, msg) => { if (!cond) throw new Error(msg); };
const textOf = (content) => (content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('');
const claimsOf = (jwt) => {
  const parts = String(jwt).split('.');
  check(parts.length === 3, 'the access token is not a JWT');
  return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
};

// Headless authorization code + PKCE provider (in memory). redirectToAuthorization plays the browser:
// one GET of the authorization URL without following redirects, the code read from Location.
class HeadlessProvider {
  constructor(preRegistered) {
    this._client = preRegistered; // undefined: the SDK registers the client (DCR)
    this._state = randomBytes(16).toString('base64url');
    this.authorizationUrl = undefined; // what the SDK sent the "browser" to
    this.code = undefined;
    this.iss = undefined;
  }
  get redirectUrl() { return redirectUri; }
  get clientMetadata() {
    return { client_name: `portcullis-oauth-interop-ts (${mode})`, redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none' };
  }
  state() { return this._state; }
  clientInformation() { return this._client; }
  saveClientInformation(info) { this._client = info; }
  tokens() { return this._tokens; }
  saveTokens(tokens) { this._tokens = tokens; }
  saveCodeVerifier(v) { this._verifier = v; }
  codeVerifier() { check(this._verifier, 'no PKCE code verifier saved'); return this._verifier; }
  invalidateCredentials(scope) {
    if (scope === 'all' || scope === 'client') this._client = undefined;
    if (scope === 'all' || scope === 'tokens') this._tokens = undefined;
    if (scope === 'all' || scope === 'verifier') this._verifier = undefined;
  }
  async redirectToAuthorization(authorizationUrl) {
    this.authorizationUrl = new URL(authorizationUrl);
    const r = await fetch(authorizationUrl, { redirect: 'manual' });
    const loc = r.headers.get('location');
    check(r.status >= 300 && r.status < 400 && loc,
      `authorization endpoint answered HTTP ${r.status} without a redirect: ${(await r.text()).slice(0, 200)}`);
    const back = new URL(loc, authorizationUrl);
    check(`${back.origin}${back.pathname}` === redirectUri, `redirected to ${back.origin}${back.pathname}, not ${redirectUri}`);
    const q = back.searchParams;
    check(!q.get('error'), `authorization error ${q.get('error')}: ${q.get('error_description')}`);
    check(q.get('state') === this._state, `state mismatch: sent ${this._state}, got ${q.get('state')}`);
    check(q.get('code'), 'no code in the redirect');
    this.code = q.get('code');
    this.iss = q.get('iss');
  }
}

const serverUrl = new URL(url);
const newTransport = (authProvider) => new StreamableHTTPClientTransport(serverUrl, { authProvider, fetch: fetchLog });
const newClient = () => new Client({ name: `portcullis-oauth-interop-ts-${mode}`, version: '1.0.0' });

let provider;
let client;
let transport;
let connected = false;

if (mode === 'client-credentials') {
  provider = new ClientCredentialsProvider({
    clientId: env.OAUTH_CLIENT_ID || 'mcp-test-client',
    clientSecret: env.OAUTH_CLIENT_SECRET || 'mcp-test-secret',
    scope: env.OAUTH_SCOPE || 'mcp:tools',
    ...(expectedIssuer ? { expectedIssuer } : {}),
  });
  // One connect: 401 -> discovery -> client_credentials token -> the initialize request is resent.
  client = newClient();
  transport = newTransport(provider);
  connected = await step('initialize', async () => {
    await client.connect(transport);
    const v = client.getServerVersion();
    return `${v?.name} ${v?.version}, protocol ${transport.protocolVersion}, session ${transport.sessionId ?? 'none'}`;
  });
} else {
  provider = new HeadlessProvider(mode === 'authcode-public' ? { client_id: env.OAUTH_PUBLIC_CLIENT_ID || 'mcp-public-client' } : undefined);
  // First connect: 401 -> discovery -> (DCR) -> redirectToAuthorization -> UnauthorizedError.
  // Then finishAuth(code) exchanges the code; a new transport connects with the token.
  const authorized = await step('authorize', async () => {
    const first = newTransport(provider);
    const c = newClient();
    let err;
    try {
      await c.connect(first);
    } catch (e) {
      err = e;
    }
    check(err, 'connect succeeded without authorization (is auth off?)');
    check(err instanceof UnauthorizedError && provider.code, `connect did not stop at the authorization redirect: ${err?.message ?? err}`);
    const res = provider.authorizationUrl.searchParams;
    check(res.get('code_challenge_method') === 'S256' && res.get('code_challenge'), 'no S256 PKCE challenge in the authorization request');
    await first.finishAuth(provider.code);
    await c.close().catch(() => {});
    const t = provider.tokens();
    check(t?.access_token, 'finishAuth stored no access token');
    return `client ${provider.clientInformation()?.client_id}, resource=${res.get('resource')}, scope="${res.get('scope')}", iss=${provider.iss}`;
  });
  if (authorized) {
    client = newClient();
    transport = newTransport(provider);
    connected = await step('initialize', async () => {
      await client.connect(transport);
      const v = client.getServerVersion();
      return `${v?.name} ${v?.version}, protocol ${transport.protocolVersion}, session ${transport.sessionId ?? 'none'}`;
    });
  }
}

let prm;
await step('discovery', async () => {
  const first = log.find((e) => e.url === url);
  check(first, `no request to ${url} was logged`);
  check(first.status === 401, `the first request to ${url} answered HTTP ${first.status}, want 401`);
  const m = /resource_metadata="([^"]+)"/.exec(first.wwwAuth || '');
  check(m, `401 without WWW-Authenticate resource_metadata: ${first.wwwAuth}`);
  const prmGet = log.find((e) => e.method === 'GET' && e.url === m[1]);
  check(prmGet, `the SDK never fetched the resource_metadata URL ${m[1]}`);
  check(prmGet.status === 200 && prmGet.json, `GET ${m[1]} answered HTTP ${prmGet.status}`);
  prm = prmGet.json;
  check(prm.resource === url, `PRM resource ${prm.resource} is not the server URL ${url}`);
  const as = prm.authorization_servers?.[0];
  check(as, 'PRM lists no authorization_servers');
  if (expectedIssuer) check(as === expectedIssuer, `PRM authorization_servers[0] ${as} is not the expected issuer ${expectedIssuer}`);
  const asOrigin = new URL(as).origin;
  // The AS metadata, not the PRM: with the built-in dev server both live on the same origin.
  const asGet = log.find((e) => e.method === 'GET' && e.url.startsWith(`${asOrigin}/.well-known/`)
    && !e.url.includes('/.well-known/oauth-protected-resource') && e.status === 200 && e.json);
  check(asGet, `no authorization server metadata fetched from ${asOrigin}`);
  check(asGet.json.issuer === as, `AS metadata issuer ${asGet.json.issuer} != ${as}`);
  const fallback = log.find((e) => e.url.startsWith(`${serverUrl.origin}/.well-known/oauth-authorization-server`)
    || e.url.startsWith(`${serverUrl.origin}/.well-known/openid-configuration`));
  check(!fallback || serverUrl.origin === asOrigin, `the SDK fell back to the server origin as AS: ${fallback?.url}`);
  const tok = log.filter((e) => e.method === 'POST' && e.url === asGet.json.token_endpoint);
  check(tok.length && tok.every((e) => e.status === 200), `token endpoint: HTTP ${tok.map((e) => e.status).join(',') || 'never called'}`);
  const reg = log.find((e) => e.method === 'POST' && e.url === asGet.json.registration_endpoint);
  if (mode === 'authcode') check(reg?.status === 201, `dynamic client registration: HTTP ${reg?.status ?? 'never called'}`);
  else check(!reg, 'the SDK registered a client although it had one');
  const flow = [`401 (${first.wwwAuth.replace(/^Bearer\s+/, '')})`, `PRM ${m[1]}`, `AS ${as} (${asGet.url.slice(asOrigin.length)})`];
  if (reg) flow.push('DCR 201');
  flow.push(`token 200 x${tok.length}`);
  return flow.join(' -> ');
});

await step('token', async () => {
  const t = provider.tokens();
  check(t?.access_token, 'the provider holds no access token');
  const c = claimsOf(t.access_token);
  const aud = [].concat(c.aud ?? []);
  check(prm, 'no PRM to compare with');
  check(aud.includes(prm.resource), `aud ${JSON.stringify(c.aud)} does not name the PRM resource ${prm.resource}`);
  check(c.iss === prm.authorization_servers[0], `iss ${c.iss} != ${prm.authorization_servers[0]}`);
  const scopes = String(c.scope ?? t.scope ?? '').split(' ').filter(Boolean);
  for (const s of prm.scopes_supported ?? []) check(scopes.includes(s), `token scope "${scopes.join(' ')}" lacks ${s}`);
  return `iss ${c.iss}, aud ${JSON.stringify(c.aud)}, sub ${c.sub}, client_id ${c.client_id}, scope "${scopes.join(' ')}"`;
});

if (connected) {
  await step('tools/list', async () => {
    const { tools } = await client.listTools();
    check(tools.some((t) => t.name === 'echo'), `no tool named echo among ${tools.length} tools`);
    return `${tools.length} tools, echo present`;
  });
  await step('tools/call echo', async () => {
    const r = await client.callTool({ name: 'echo', arguments: { message: 'hello portcullis oauth' } });
    check(r.isError !== true, `isError: ${textOf(r.content).slice(0, 200)}`);
    const text = textOf(r.content);
    check(text.includes('hello portcullis oauth'), `result text lacks "hello portcullis oauth": ${JSON.stringify(text).slice(0, 200)}`);
    return JSON.stringify(text).slice(0, 80);
  });
  await step('session DELETE', async () => {
    check(transport.sessionId, 'server issued no Mcp-Session-Id');
    const n = log.length;
    await transport.terminateSession();
    const dels = log.slice(n).filter((e) => e.method === 'DELETE').map((e) => e.status);
    check(dels.length > 0, 'no DELETE was sent');
    check(dels.every((s) => s >= 200 && s < 300), `DELETE answered HTTP ${dels.join(',')} (want 2xx)`);
    return `HTTP ${dels.join(',')}`;
  });
  await step('close', async () => { await client.close(); });
}
process.exit(failed ? 1 : 0);
