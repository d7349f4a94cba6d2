// tests/idp/server.mjs - Portcullis's test OAuth 2.1 / OpenID Connect authorization server, built
// on the certified oidc-provider (pinned in scripts/lib.sh). Owns: issuing RS256 JWT and opaque
// access tokens for our authentication tests, its signing keys (optionally persisted in a key file
// for key rotation tests) and the auto-approved code flow. Started by scripts/idp.sh. Test use
// only: it auto-approves every authorization request; it listens on 127.0.0.1 only.
// Usage: node server.mjs PORT           (issuer http://127.0.0.1:PORT, no trailing slash)
// Env:
//   PC_NPM_DIR          dir whose node_modules holds oidc-provider (set by scripts/idp.sh)
//   MCP_RESOURCE        comma list of resource URLs that get RS256 JWT access tokens, aud = the
//                       resource (default http://127.0.0.1:8080/mcp); the first is the default
//   MCP_OPAQUE_RESOURCE comma list of resource URLs that get opaque (introspectable) tokens
//   IDP_ANY_RESOURCE=1  also accept any other http(s) resource (JWT, aud = that resource)
//   IDP_SCOPES          resource scopes (default "mcp:tools tools:read tools:write")
//   IDP_CLIENT_ID / IDP_CLIENT_SECRET  confidential client (client_secret_basic), default
//                       mcp-test-client / mcp-test-secret; public client: mcp-public-client
//   IDP_USER            auto-approved end user of the code flow (default alice; login_hint wins)
//   IDP_TOKEN_TTL       access token lifetime in seconds (default 3600)
//   IDP_NBF_OFFSET      seconds; when set, JWT access tokens carry nbf = iat + offset
//   IDP_KEY_FILE        path of a JSON file {"keys":[private JWK, ...]}: loaded if it exists,
//                       else the generated key(s) are written there (mode 600). Same file on a
//                       restart = same key and kid; deleted file = a new key (rotation)
//   IDP_EXTRA_KEY=1     publish a second RS256 key in /jwks, listed FIRST, but keep signing access
//                       tokens with the primary key (pinned by kid) - checks kid selection
import { createRequire } from 'node:module';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { pathToFileURL } from 'node:url';

const env = process.env;
if (!env.PC_NPM_DIR) throw new Error('PC_NPM_DIR is not set (start this through scripts/idp.sh)');
const req = createRequire(`${env.PC_NPM_DIR}/package.json`);
const { default: Provider, errors } = await import(pathToFileURL(req.resolve('oidc-provider')).href);

const port = Number(process.argv[2] || 9400);
const list = (s) => (s || '').split(',').map((x) => x.trim()).filter(Boolean);
const int = (name, dflt) => {
  const v = env[name];
  if (v === undefined || v === '') return dflt;
  if (!/^-?\d+$/.test(v)) throw new Error(`${name} must be an integer number of seconds, got "${v}"`);
  return Number(v);
};
const cfg = {
  resources: list(env.MCP_RESOURCE || 'http://127.0.0.1:8080/mcp'),
  opaqueResources: list(env.MCP_OPAQUE_RESOURCE),
  anyResource: env.IDP_ANY_RESOURCE === '1',
  scopes: env.IDP_SCOPES || 'mcp:tools tools:read tools:write',
  clientId: env.IDP_CLIENT_ID || 'mcp-test-client',
  clientSecret: env.IDP_CLIENT_SECRET || 'mcp-test-secret',
  user: env.IDP_USER || 'alice',
  tokenTTL: int('IDP_TOKEN_TTL', 3600),
  nbfOffset: int('IDP_NBF_OFFSET', undefined),
  keyFile: env.IDP_KEY_FILE || '',
  extraKey: env.IDP_EXTRA_KEY === '1',
};
const issuer = `http://127.0.0.1:${port}`;
const redirectUris = ['http://127.0.0.1:3000/callback', 'http://localhost:3000/callback'];

// Signing keys. kid = RFC 7638 thumbprint, so a new key always gets a new kid.
function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const kid = createHash('sha256').update(JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n })).digest('base64url');
  return { ...jwk, kid, use: 'sig', alg: 'RS256' };
}
let keys;
let generated = false;
if (cfg.keyFile && existsSync(cfg.keyFile)) {
  keys = JSON.parse(readFileSync(cfg.keyFile, 'utf8')).keys;
  if (!Array.isArray(keys) || !keys.length || !keys.every((k) => k.kty === 'RSA' && k.d && k.kid)) {
    throw new Error(`IDP_KEY_FILE ${cfg.keyFile}: expected {"keys":[private RSA JWK with kid, ...]}`);
  }
} else {
  keys = [newKey()];
  generated = true;
}
if (cfg.extraKey && keys.length < 2) { keys.push(newKey()); generated = true; }
if (cfg.keyFile && generated) {
  mkdirSync(dirname(cfg.keyFile), { recursive: true });
  writeFileSync(cfg.keyFile, `${JSON.stringify({ keys }, null, 2)}\n`, { mode: 0o600 });
}
const signingKid = keys[0].kid;
// With IDP_EXTRA_KEY the extra key comes first in /jwks: a verifier that ignores kid fails.
const published = cfg.extraKey ? [...keys.slice(1), keys[0]] : keys;

const provider = new Provider(issuer, {
  jwks: { keys: published },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  scopes: ['openid', 'offline_access', ...cfg.scopes.split(' ')],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  clients: [
    { client_id: cfg.clientId, client_secret: cfg.clientSecret, redirect_uris: redirectUris,
      grant_types: ['client_credentials', 'authorization_code', 'refresh_token'], response_types: ['code'] },
    { client_id: 'mcp-public-client', token_endpoint_auth_method: 'none', redirect_uris: redirectUris,
      grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'] },
  ],
  responseTypes: ['code'], // OAuth 2.1: no implicit / hybrid
  pkce: { required: () => true }, // oidc-provider 9 supports only S256
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, email: `${sub}@example.test`, email_verified: true, name: sub }),
  }),
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  clientBasedCORS: () => true,
  formats: {
    customizers: {
      // Runs before signing; iat is already set. Only JWT access tokens pass through here.
      jwt: async (ctx, token, jwt) => {
        if (cfg.nbfOffset !== undefined) jwt.payload.nbf = jwt.payload.iat + cfg.nbfOffset;
      },
    },
  },
  features: {
    devInteractions: { enabled: false }, // replaced by the auto-approve middleware below
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    registration: { enabled: true }, // open dynamic client registration (RFC 7591)
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf || cfg.resources[0],
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resource) => {
        const opaque = cfg.opaqueResources.includes(resource);
        if (!opaque && !cfg.resources.includes(resource) && !(cfg.anyResource && /^https?:\/\//.test(resource))) {
          throw new errors.InvalidTarget(`resource not configured in the test IdP: ${resource}`);
        }
        return opaque
          ? { scope: cfg.scopes, accessTokenTTL: cfg.tokenTTL, accessTokenFormat: 'opaque' }
          : { scope: cfg.scopes, audience: resource, accessTokenTTL: cfg.tokenTTL,
              accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256', kid: signingKid } } };
      },
    },
  },
});

// Auto-approve one interaction (login as the test user, then consent to what was asked).
async function approve(uid) {
  const i = await provider.Interaction.find(uid);
  const { name, details } = i.prompt;
  const result = {};
  if (name === 'login') result.login = { accountId: i.params.login_hint || cfg.user };
  if (name === 'consent') {
    const grant = i.grantId ? await provider.Grant.find(i.grantId)
      : new provider.Grant({ accountId: i.session.accountId, clientId: i.params.client_id });
    if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
    if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
    for (const [res, s] of Object.entries(details.missingResourceScopes || {})) grant.addResourceScope(res, s.join(' '));
    result.consent = { grantId: await grant.save() };
  }
  i.result = { ...i.lastSubmission, ...result };
  await i.save(i.exp - Math.floor(Date.now() / 1000));
  return i.returnTo;
}

// Cookie header for the next hop: request cookies updated by Set-Cookie lines, in order.
function cookieJar(header, setCookies) {
  const jar = new Map((header || '').split(/;\s*/).filter(Boolean).map((c) => c.split(/=(.*)/s).slice(0, 2)));
  for (const c of setCookies) {
    const [n, v] = c.split(';')[0].split(/=(.*)/s);
    if (/expires=Thu, 01 Jan 1970/i.test(c)) jar.delete(n); else jar.set(n, v);
  }
  return [...jar].map(([n, v]) => `${n}=${v}`).join('; ');
}

provider.use(async (ctx, next) => {
  // RFC 8414 metadata at its own well-known path too (same document as OIDC discovery).
  if (ctx.path === '/.well-known/oauth-authorization-server') ctx.path = '/.well-known/openid-configuration';
  await next();
  // Instead of sending the user agent to /interaction/UID, approve it here and follow the
  // resume redirect server-side (with the cookies it needs), so a cookie-less client gets
  // the final 303 to redirect_uri?code=...&state=...&iss=... from a single GET /auth.
  const loc = ctx.status === 303 && ctx.response.get('location');
  const m = loc && /^\/interaction\/([^/?]+)$/.exec(loc);
  if (!m) return;
  const set = [].concat(ctx.response.get('set-cookie') || []);
  const r = await fetch(new URL(await approve(m[1]), issuer), {
    redirect: 'manual', headers: { cookie: cookieJar(ctx.get('cookie'), set) },
  });
  ctx.status = r.status;
  ctx.set('location', r.headers.get('location') || '');
  ctx.set('set-cookie', [...set, ...r.headers.getSetCookie()]);
  ctx.body = await r.text();
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`test IdP ${issuer} (JWT resources: ${cfg.resources.join(', ') || '-'}; opaque: ${cfg.opaqueResources.join(', ') || '-'})`);
  console.log(`signing kid ${signingKid}${cfg.extraKey ? ` (extra published kid ${keys.slice(1).map((k) => k.kid).join(', ')})` : ''}`
    + `${cfg.keyFile ? ` key file ${cfg.keyFile} (${generated ? 'written' : 'loaded'})` : ''}`
    + `; token TTL ${cfg.tokenTTL}s${cfg.nbfOffset !== undefined ? `; nbf = iat ${cfg.nbfOffset < 0 ? '-' : '+'} ${Math.abs(cfg.nbfOffset)}` : ''}`);
});
server.on('error', (e) => { console.error(`test IdP: cannot listen on 127.0.0.1:${port}: ${e.message}`); process.exit(1); });
