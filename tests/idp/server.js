// A real OpenID Provider for Portcullis integration tests, built on `oidc-provider`.
//
// Usage: node server.js ['<json config>' | @config.json]
//        (or IDP_CONFIG='<json>' node server.js; see README.md for every key and env var)
//
// Prints `READY <issuer>` on stdout once listening, then one line per event of interest
// (GRANT, GRANT_ERROR, LOGIN, LOGIN_FAILED, LOGOUT, USERINFO, ...). Never prints secrets or tokens.
// Exits 0 on SIGTERM / SIGINT.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

const DEFAULT_USERS = {
  alice: {
    email: 'alice@example.com',
    name: 'Alice Example',
    groups: ['staff', 'admins'],
    acr: 'urn:portcullis:test:loa:1',
    amr: ['pwd'],
  },
  bob: {
    email: 'bob@example.com',
    name: 'Bob Example',
    groups: ['staff'],
    acr: 'urn:portcullis:test:loa:2',
    amr: ['pwd', 'otp', 'mfa'],
  },
  carol: {
    email: 'carol@contractor.test',
    name: 'Carol Contractor',
    groups: ['contractors'],
    acr: 'urn:portcullis:test:loa:1',
    amr: ['pwd'],
  },
  dave: {
    email: 'dave@example.com',
    email_verified: false,
    name: 'Dave Nogroups',
    groups: [],
    acr: 'urn:portcullis:test:loa:1',
    amr: ['pwd'],
  },
};

const DEFAULT_CLIENT = {
  client_id: 'portcullis',
  client_secret: 'portcullis-secret',
  redirect_uris: ['http://127.0.0.1:8080/.portcullis/callback'],
  post_logout_redirect_uris: ['http://127.0.0.1:8080/'],
};

function fail(message) {
  process.stderr.write(`idp: ${message}\n`);
  process.exit(2);
}

function readJsonConfig() {
  let text = process.argv[2] ?? process.env.IDP_CONFIG;
  if (text === undefined || text.trim() === '') return {};
  if (text.startsWith('@')) {
    try {
      text = fs.readFileSync(text.slice(1), 'utf8');
    } catch (err) {
      fail(`cannot read config file ${text.slice(1)}: ${err.message}`);
    }
  }
  try {
    const parsed = JSON.parse(text);
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      fail('config must be a JSON object');
    }
    return parsed;
  } catch (err) {
    return fail(`config is not valid JSON: ${err.message}`);
  }
}

const list = (value) => value.split(',').map((s) => s.trim()).filter(Boolean);

function intEnv(name) {
  const value = process.env[name];
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) fail(`${name} must be a non-negative integer`);
  return n;
}

function loadConfig() {
  const json = readJsonConfig();
  const env = process.env;

  const ttl = { ...(json.ttl ?? {}) };
  for (const [key, name] of [
    ['id_token', 'IDP_ID_TOKEN_TTL'],
    ['access_token', 'IDP_ACCESS_TOKEN_TTL'],
    ['refresh_token', 'IDP_REFRESH_TOKEN_TTL'],
  ]) {
    const v = intEnv(name);
    if (v !== undefined) ttl[key] = v;
  }

  let clients = json.clients ?? [{ ...DEFAULT_CLIENT }];
  if (!Array.isArray(clients) || clients.length === 0) fail('clients must be a non-empty array');
  // The env vars describe (or override) the first client: the common single-client case.
  const first = { ...clients[0] };
  if (env.IDP_CLIENT_ID) first.client_id = env.IDP_CLIENT_ID;
  if (env.IDP_CLIENT_SECRET) first.client_secret = env.IDP_CLIENT_SECRET;
  if (env.IDP_REDIRECT_URIS) first.redirect_uris = list(env.IDP_REDIRECT_URIS);
  if (env.IDP_POST_LOGOUT_REDIRECT_URIS) {
    first.post_logout_redirect_uris = list(env.IDP_POST_LOGOUT_REDIRECT_URIS);
  }
  clients = [first, ...clients.slice(1)];

  const users = { ...DEFAULT_USERS };
  for (const [name, user] of Object.entries(json.users ?? {})) {
    if (user === null) delete users[name];
    else users[name] = { ...(DEFAULT_USERS[name] ?? {}), ...user };
  }

  const port = intEnv('IDP_PORT') ?? intEnv('PORT') ?? json.port ?? 0;

  const config = {
    port,
    clients,
    users,
    password: env.IDP_PASSWORD ?? json.password ?? 'password',
    ttl: {
      id_token: ttl.id_token ?? 3600,
      access_token: ttl.access_token ?? 3600,
      refresh_token: ttl.refresh_token ?? 14 * 24 * 3600,
      authorization_code: ttl.authorization_code ?? 60,
      session: ttl.session ?? 14 * 24 * 3600,
      interaction: ttl.interaction ?? 3600,
      grant: ttl.grant ?? 14 * 24 * 3600,
    },
    refresh_tokens: env.IDP_REFRESH_TOKENS ?? json.refresh_tokens ?? 'always',
    rotate_refresh_tokens: json.rotate_refresh_tokens ?? true,
    consent: json.consent ?? 'auto',
    logout_prompt: json.logout_prompt ?? 'without_hint',
    id_token_claims: json.id_token_claims ?? 'all',
    clock_tolerance: json.clock_tolerance ?? 0,
    signing_alg: json.signing_alg ?? 'RS256',
    resource_servers: json.resource_servers ?? {},
    admin: json.admin ?? true,
    iss_parameter: json.iss_parameter ?? true,
  };

  if (!['always', 'offline_access', 'never'].includes(config.refresh_tokens)) {
    fail('refresh_tokens must be one of always, offline_access, never');
  }
  if (!['auto', 'form'].includes(config.consent)) fail('consent must be auto or form');
  if (!['without_hint', 'always'].includes(config.logout_prompt)) {
    fail('logout_prompt must be without_hint or always');
  }
  if (!['RS256', 'ES256', 'EdDSA'].includes(config.signing_alg)) {
    fail('signing_alg must be RS256, ES256 or EdDSA');
  }
  if (!['all', 'minimal'].includes(config.id_token_claims)) {
    fail('id_token_claims must be all or minimal');
  }
  if (typeof config.iss_parameter !== 'boolean') fail('iss_parameter must be true or false');
  for (const [name, user] of Object.entries(config.users)) {
    if (user.otp !== undefined && (typeof user.otp !== 'string' || user.otp === '')) {
      fail(`users.${name}.otp must be a non-empty string`);
    }
  }
  for (const [key, value] of Object.entries(config.ttl)) {
    if (!Number.isInteger(value) || value <= 0) fail(`ttl.${key} must be a positive integer`);
  }
  if (!Number.isInteger(config.port) || config.port < 0 || config.port > 65535) {
    fail('port must be an integer between 0 and 65535');
  }
  return config;
}

const config = loadConfig();

// ---------------------------------------------------------------------------------------------
// Events: one stdout line each, plus counters served at /__test/counts
// ---------------------------------------------------------------------------------------------

const counts = {};

function bump(key) {
  // Never thrown from here (it runs inside the provider's event handlers): the harness line
  // says which key to list, and asking for it fails until it is.
  if (!knownCounter(key)) event('HARNESS_ERROR', { error: `unlisted_counter_${key}` });
  counts[key] = (counts[key] ?? 0) + 1;
}

// Every key `bump` may count. Asking /__test/count for any other is an error, not 0: a typo or
// a renamed counter would otherwise read as 0 and pass every "nothing happened" check.
const PLAIN_COUNTERS = ['login', 'login_failure', 'login_otp', 'logout', 'server_error', 'token_injected_failure'];
const GRANT_TYPES = ['authorization_code', 'refresh_token', 'client_credentials'];

function knownCounter(key) {
  if (typeof key !== 'string') return false;
  if (PLAIN_COUNTERS.includes(key)) return true;
  const colon = key.indexOf(':');
  if (colon < 0) return false;
  const family = key.slice(0, colon);
  const detail = key.slice(colon + 1);
  switch (family) {
    case 'grant':
    case 'grant_error':
      // A request without a grant_type is counted under `undefined`.
      return GRANT_TYPES.includes(detail) || (family === 'grant_error' && detail === 'undefined');
    case 'id_token_tampered':
      return TAMPER_MODES.includes(detail);
    case 'signed':
      return SIGN_KEYS.includes(detail);
    case 'userinfo':
      return /^[1-5][0-9][0-9]$/.test(detail);
    default:
      return false;
  }
}

// `fields` values are never secrets: grant types, client ids, subjects, error codes.
function event(name, fields = {}) {
  const parts = Object.entries(fields)
    .filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => `${k}=${String(Array.isArray(v) ? v.join(',') : v).replace(/\s+/g, '_')}`);
  process.stdout.write(`${[name, ...parts].join(' ')}\n`);
}

// ---------------------------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------------------------

function userClaims(username) {
  const user = config.users[username];
  const claims = {
    sub: username,
    email: user.email ?? `${username}@example.com`,
    email_verified: user.email_verified ?? true,
    name: user.name ?? username,
    preferred_username: user.preferred_username ?? username,
    groups: user.groups ?? [],
  };
  return { ...claims, ...(user.claims ?? {}) };
}

// Extra per-user claims are released with the `profile` scope.
const extraClaimNames = new Set();
for (const user of Object.values(config.users)) {
  for (const name of Object.keys(user.claims ?? {})) extraClaimNames.add(name);
}

// A login with the right one-time code (the `otp` field of the login form) is a step-up
// login: these acr and amr, whatever the user's own.
const STEP_UP_ACR = 'urn:portcullis:test:loa:2';
const STEP_UP_AMR = ['pwd', 'otp', 'mfa'];
const DEFAULT_OTP = '123456';

const acrValues = [...new Set([
  'urn:portcullis:test:loa:1',
  STEP_UP_ACR,
  ...Object.values(config.users).map((u) => u.acr).filter(Boolean),
])];

function passwordFor(username) {
  return config.users[username]?.password ?? config.password;
}

function otpFor(username) {
  return config.users[username]?.otp ?? DEFAULT_OTP;
}

function safeEqual(a, b) {
  const x = crypto.createHash('sha256').update(String(a)).digest();
  const y = crypto.createHash('sha256').update(String(b)).digest();
  return crypto.timingSafeEqual(x, y);
}

// ---------------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------------

function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body>
<h1>${esc(title)}</h1>
${body}
</body>
</html>
`;
}

function loginPage(uid, { clientName, loginHint, error }) {
  return page('Sign in', `<p>Sign in to continue to ${esc(clientName)}.</p>
${error ? `<p class="error" role="alert">${esc(error)}</p>\n` : ''}<form id="login" method="post" action="/interaction/${esc(uid)}/login">
  <label>Username <input type="text" name="username" value="${esc(loginHint ?? '')}" autocomplete="username" required></label>
  <label>Password <input type="password" name="password" autocomplete="current-password" required></label>
  <label>One-time code (optional) <input type="text" name="otp" value="" inputmode="numeric" autocomplete="one-time-code"></label>
  <button type="submit">Sign in</button>
</form>
<p><a href="/interaction/${esc(uid)}/abort">Cancel</a></p>`);
}

function consentPage(uid, { clientName, scopes }) {
  return page('Authorize', `<p>${esc(clientName)} asks for: ${esc(scopes.join(' '))}</p>
<form id="consent" method="post" action="/interaction/${esc(uid)}/consent">
  <input type="hidden" name="consent" value="yes">
  <button type="submit">Allow</button>
</form>
<p><a href="/interaction/${esc(uid)}/abort">Deny</a></p>`);
}

// ---------------------------------------------------------------------------------------------
// Provider
// ---------------------------------------------------------------------------------------------

// A fresh signing key per instance, generated on the thread pool while oidc-provider loads.
const KEY_TYPES = {
  RS256: ['rsa', { modulusLength: 2048 }],
  ES256: ['ec', { namedCurve: 'P-256' }],
  EdDSA: ['ed25519', {}],
};

function generateJwks() {
  const [type, options] = KEY_TYPES[config.signing_alg];
  return new Promise((resolve, reject) => {
    crypto.generateKeyPair(type, options, (err, publicKey, privateKey) => {
      if (err) return reject(err);
      const jwk = privateKey.export({ format: 'jwk' });
      const kid = crypto.randomBytes(8).toString('hex');
      return resolve({ keys: [{ ...jwk, kid, use: 'sig', alg: config.signing_alg }] });
    });
  });
}

const jwksPromise = generateJwks();
const { Provider, errors } = await import('oidc-provider');
const jwks = await jwksPromise;

function buildClients() {
  return config.clients.map((c) => {
    if (!c.client_id) fail('every client needs a client_id');
    const grantTypes = c.grant_types ?? ['authorization_code', 'refresh_token'];
    return {
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: config.signing_alg,
      response_types: grantTypes.includes('authorization_code') ? ['code'] : [],
      post_logout_redirect_uris: [],
      ...c,
      grant_types: grantTypes,
    };
  });
}

function buildProvider(issuer) {
  const resourceServers = config.resource_servers;
  const grantsByAccount = new Map();

  const provider = new Provider(issuer, {
    clients: buildClients(),
    jwks,
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    claims: {
      acr: null,
      amr: null,
      auth_time: null,
      sid: null,
      iss: null,
      openid: ['sub', 'acr', 'amr'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username', ...extraClaimNames],
      groups: ['groups'],
    },
    acrValues,
    // Short TTLs are the point of most tests using this IdP: no grace period by default.
    clockTolerance: config.clock_tolerance,
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    responseTypes: ['code'],
    pkce: { required: () => true },
    conformIdTokenClaims: config.id_token_claims === 'minimal',
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      clientCredentials: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          // The provider's own form holds only the xsrf input; make it a self-contained form
          // that a plain HTTP client can post as found.
          const confirm = form.replace(
            '</form>',
            '<input type="hidden" name="logout" value="yes"/><button type="submit">Yes, sign me out</button></form>',
          );
          ctx.type = 'html';
          ctx.body = page('Sign out', `<p>Do you want to sign out of ${esc(ctx.host)}?</p>\n${confirm}`);
        },
        async postLogoutSuccessSource(ctx) {
          ctx.type = 'html';
          ctx.body = page('Signed out', '<p>You have been signed out.</p>');
        },
      },
      resourceIndicators: {
        enabled: true,
        async defaultResource() {
          return undefined;
        },
        async useGrantedResource() {
          return false;
        },
        async getResourceServerInfo(ctx, indicator) {
          const rs = resourceServers[indicator];
          if (!rs) throw new errors.InvalidTarget();
          return {
            scope: rs.scope ?? '',
            audience: indicator,
            accessTokenTTL: rs.access_token_ttl ?? config.ttl.access_token,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: config.signing_alg } },
          };
        },
      },
    },
    ttl: {
      IdToken: config.ttl.id_token,
      AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? config.ttl.access_token,
      ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? config.ttl.access_token,
      RefreshToken: config.ttl.refresh_token,
      AuthorizationCode: config.ttl.authorization_code,
      Session: config.ttl.session,
      Interaction: config.ttl.interaction,
      Grant: config.ttl.grant,
    },
    async issueRefreshToken(ctx, client, code) {
      if (!client.grantTypeAllowed('refresh_token')) return false;
      switch (config.refresh_tokens) {
        case 'always':
          return true;
        case 'offline_access':
          return code.scopes.has('offline_access');
        default:
          return false;
      }
    },
    rotateRefreshToken: () => config.rotate_refresh_tokens,
    async findAccount(ctx, sub) {
      if (!Object.hasOwn(config.users, sub)) return undefined;
      return {
        accountId: sub,
        async claims() {
          return userClaims(sub);
        },
      };
    },
    async loadExistingGrant(ctx) {
      const { oidc } = ctx;
      const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
      let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
      if (config.consent !== 'auto') return grant;
      // First-party test client: grant whatever was asked for, no consent screen.
      grant ??= new oidc.provider.Grant({
        accountId: oidc.session.accountId,
        clientId: oidc.client.clientId,
      });
      grant.addOIDCScope([...oidc.requestParamOIDCScopes].join(' '));
      if (oidc.requestParamClaims.size) grant.addOIDCClaims([...oidc.requestParamClaims]);
      for (const [indicator, rs] of Object.entries(oidc.resourceServers ?? {})) {
        grant.addResourceScope(indicator, rs.scope);
      }
      await grant.save();
      return grant;
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      const details = Object.entries(out)
        .map(([k, v]) => `<p><strong>${esc(k)}</strong>: <span class="${esc(k)}">${esc(v)}</span></p>`)
        .join('\n');
      ctx.body = page('Error', details);
    },
  });

  provider.on('grant.saved', (grant) => {
    if (!grant.accountId) return;
    if (!grantsByAccount.has(grant.accountId)) grantsByAccount.set(grant.accountId, new Set());
    grantsByAccount.get(grant.accountId).add(grant.jti);
  });

  provider.on('grant.success', (ctx) => {
    const grantType = ctx.oidc.params.grant_type;
    bump(`grant:${grantType}`);
    event('GRANT', {
      grant_type: grantType,
      client_id: ctx.oidc.client?.clientId,
      sub: ctx.oidc.account?.accountId,
    });
  });

  provider.on('grant.error', (ctx, err) => {
    const grantType = ctx.oidc?.params?.grant_type;
    bump(`grant_error:${grantType}`);
    event('GRANT_ERROR', {
      grant_type: grantType,
      client_id: ctx.oidc?.client?.clientId,
      error: err.error ?? err.message,
      detail: err.error_detail,
    });
  });

  provider.on('end_session.success', (ctx) => {
    bump('logout');
    event('LOGOUT', { client_id: ctx.oidc.client?.clientId });
  });

  provider.on('server_error', (ctx, err) => {
    bump('server_error');
    event('SERVER_ERROR', { path: ctx.path, error: err.message });
  });

  // Revokes every grant (and so every refresh and access token) of one account.
  async function revokeAccount(sub) {
    const ids = [...(grantsByAccount.get(sub) ?? [])];
    grantsByAccount.delete(sub);
    for (const grantId of ids) {
      await Promise.all([
        provider.AccessToken.revokeByGrantId(grantId),
        provider.RefreshToken.revokeByGrantId(grantId),
        provider.AuthorizationCode.revokeByGrantId(grantId),
        provider.Grant.adapter.destroy(grantId),
      ]);
    }
    return ids.length;
  }

  // `iss_parameter: false`: an IdP from before RFC 9207, which neither advertises
  // authorization_response_iss_parameter_supported nor puts `iss` into authorization responses
  // (oidc-provider always does both).
  if (!config.iss_parameter) {
    const redirectUris = new Set(config.clients.flatMap((c) => c.redirect_uris ?? []));
    provider.use(async (ctx, next) => {
      await next();
      if (ctx.path === '/.well-known/openid-configuration' && ctx.body && typeof ctx.body === 'object') {
        delete ctx.body.authorization_response_iss_parameter_supported;
      }
      const location = ctx.response.get('location');
      if (location) {
        const url = new URL(location, issuer);
        if (redirectUris.has(`${url.origin}${url.pathname}`) && url.searchParams.has('iss')) {
          url.searchParams.delete('iss');
          ctx.set('location', url.href);
        }
      }
    });
  }

  return { provider, revokeAccount };
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

const MAX_BODY = 64 * 1024;

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) throw Object.assign(new Error('body too large'), { status: 413 });
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function readJson(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) throw Object.assign(new Error('body too large'), { status: 413 });
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    throw Object.assign(new Error(`body is not JSON: ${err.message}`), { status: 400 });
  }
}

function send(res, status, type, body, headers = {}) {
  res.writeHead(status, {
    'content-type': type,
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(body);
}

const sendHtml = (res, status, body) => send(res, status, 'text/html; charset=utf-8', body);
const sendJson = (res, status, obj) => send(res, status, 'application/json', `${JSON.stringify(obj)}\n`);

const injected = { failures: 0, status: 503, delayMs: 0 };

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// ---------------------------------------------------------------------------------------------
// ID token tampering and token capture (test hooks for relying-party security tests)
// ---------------------------------------------------------------------------------------------

// `POST /__test/tamper-id-token?mode=M[&count=N]`: the next N token responses carrying an ID
// token get it replaced according to M. `POST /__test/capture-tokens`: every later token
// response is kept for `GET /__test/tokens` (to check that a relying party never logs them).
const TAMPER_MODES = [
  'nonce', // another nonce, signed with the real key
  'no_nonce', // the nonce removed, signed with the real key
  'aud', // another audience, signed with the real key
  'iss', // another issuer, signed with the real key
  'expired', // exp and iat an hour in the past, signed with the real key
  'unknown_key', // signed with a fresh key under a kid that is not in the JWKS
  'wrong_key', // signed with a fresh key under the real kid
  'modified', // claims changed (sub, groups) after signing: the signature no longer matches
  'alg_none', // header alg "none", no signature
];
const tamper = { mode: null, count: 0, capture: false, captured: [] };

const b64u = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

function signJwt(header, payload, key, alg) {
  const input = `${b64u(header)}.${b64u(payload)}`;
  if (alg === 'none') return `${input}.`;
  let sig;
  if (alg === 'HS256') sig = crypto.createHmac('sha256', key).update(input).digest();
  else if (alg === 'EdDSA') sig = crypto.sign(null, Buffer.from(input), key);
  else if (alg === 'ES256') sig = crypto.sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  else sig = crypto.sign('sha256', Buffer.from(input), key);
  return `${input}.${sig.toString('base64url')}`;
}

// The real signing key, and a new key of the same type (not in the JWKS).
const realSigningKey = () => crypto.createPrivateKey({ key: jwks.keys[0], format: 'jwk' });

function freshSigningKey() {
  const [type, options] = KEY_TYPES[config.signing_alg];
  return crypto.generateKeyPairSync(type, options).privateKey;
}

// The real public key as SPKI PEM text (what a verifier holding "the public key" has in hand):
// the HMAC secret of the classic RS256 -> HS256 algorithm-confusion attack.
function realPublicKeyPem() {
  return crypto.createPublicKey(realSigningKey()).export({ type: 'spki', format: 'pem' });
}

// `POST /__test/sign`: a JWT over the test's own payload. `key` is one of SIGN_KEYS; `header`
// fields are merged over the defaults of that key (a null value removes a field).
const SIGN_KEYS = [
  'real', // the JWKS key: alg = the signing alg, kid = the real kid
  'fresh', // a new key of the same type under a new kid (keep a given kid: wrong key, real kid)
  'none', // alg "none", empty signature
  'hs256_jwks', // HS256 keyed with the real public key's PEM text, under the real kid
];

function signForTest({ payload, header = {}, key }) {
  const realKid = jwks.keys[0].kid;
  let defaults;
  let signingKey;
  let alg;
  switch (key) {
    case 'real':
      defaults = { alg: config.signing_alg, kid: realKid };
      [signingKey, alg] = [realSigningKey(), config.signing_alg];
      break;
    case 'fresh':
      defaults = { alg: config.signing_alg, kid: crypto.randomBytes(8).toString('hex') };
      [signingKey, alg] = [freshSigningKey(), config.signing_alg];
      break;
    case 'none':
      defaults = { alg: 'none' };
      [signingKey, alg] = [null, 'none'];
      break;
    case 'hs256_jwks':
      defaults = { alg: 'HS256', kid: realKid };
      [signingKey, alg] = [realPublicKeyPem(), 'HS256'];
      break;
    default:
      throw Object.assign(new Error(`key must be one of ${SIGN_KEYS.join(', ')}`), { status: 400 });
  }
  const merged = { ...defaults, ...header };
  for (const [k, v] of Object.entries(merged)) if (v === null) delete merged[k];
  // The signature is made with the key's own algorithm whatever the header claims.
  return signJwt(merged, payload, signingKey, alg);
}

function tamperIdToken(token, mode) {
  const [h, p, s] = token.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
  const resign = (hdr, pay, key = realSigningKey()) => signJwt(hdr, pay, key, config.signing_alg);
  const freshKey = freshSigningKey;
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case 'nonce':
      return resign(header, { ...payload, nonce: crypto.randomBytes(16).toString('base64url') });
    case 'no_nonce': {
      const { nonce, ...rest } = payload;
      return resign(header, rest);
    }
    case 'aud':
      return resign(header, { ...payload, aud: 'someone-else', azp: undefined });
    case 'iss':
      return resign(header, { ...payload, iss: 'http://idp.evil.test' });
    case 'expired':
      return resign(header, { ...payload, iat: now - 7200, exp: now - 3600 });
    case 'unknown_key':
      return resign({ ...header, kid: crypto.randomBytes(8).toString('hex') }, payload, freshKey());
    case 'wrong_key':
      return resign(header, payload, freshKey());
    case 'modified':
      return `${h}.${b64u({ ...payload, sub: 'admin', groups: ['admins'] })}.${s}`;
    case 'alg_none':
      return signJwt({ ...header, alg: 'none', kid: undefined }, payload, null, 'none');
    default:
      throw new Error(`unknown tamper mode ${mode}`);
  }
}

// Runs a token request through the provider over loopback, then alters or records the answer.
async function tokenThroughHooks(state, req, res) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const headers = { 'x-idp-internal': '1', accept: 'application/json' };
  for (const name of ['authorization', 'content-type']) {
    if (req.headers[name]) headers[name] = req.headers[name];
  }
  const response = await fetch(new URL('/token', state.issuer), {
    method: 'POST',
    headers,
    body: Buffer.concat(chunks),
    redirect: 'manual',
  });
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (response.status === 200 && body?.id_token && tamper.count > 0) {
    body.id_token = tamperIdToken(body.id_token, tamper.mode);
    tamper.count -= 1;
    bump(`id_token_tampered:${tamper.mode}`);
    event('ID_TOKEN_TAMPERED', { mode: tamper.mode });
  }
  if (response.status === 200 && body && tamper.capture) {
    tamper.captured.push({
      access_token: body.access_token,
      refresh_token: body.refresh_token,
      id_token: body.id_token,
    });
  }
  return send(res, response.status, response.headers.get('content-type') ?? 'application/json',
    body === undefined ? text : JSON.stringify(body), { pragma: 'no-cache' });
}

async function handleInteraction(state, req, res, url) {
  const { provider } = state;
  const match = /^\/interaction\/([^/]+)(?:\/(login|consent|abort))?$/.exec(url.pathname);
  if (!match) return sendHtml(res, 404, page('Not found', ''));
  const [, uid, action] = match;

  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    return sendHtml(res, 400, page('Error', `<p>The sign-in request has expired or is unknown (${esc(err.message)}). Start again.</p>`));
  }
  if (details.uid !== uid) return sendHtml(res, 400, page('Error', '<p>Interaction mismatch.</p>'));
  const client = await provider.Client.find(details.params.client_id);
  const clientName = client?.clientName ?? details.params.client_id;

  if (req.method === 'GET' && action === undefined) {
    if (details.prompt.name === 'login') {
      return sendHtml(res, 200, loginPage(uid, { clientName, loginHint: details.params.login_hint }));
    }
    if (details.prompt.name === 'consent') {
      const scopes = details.prompt.details.missingOIDCScope ?? [];
      return sendHtml(res, 200, consentPage(uid, { clientName, scopes }));
    }
    return sendHtml(res, 501, page('Error', `<p>Unsupported prompt ${esc(details.prompt.name)}.</p>`));
  }

  if (req.method === 'GET' && action === 'abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }

  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const username = form.get('username') ?? form.get('login') ?? '';
    const password = form.get('password') ?? '';
    const otp = form.get('otp') ?? '';
    const known = Object.hasOwn(config.users, username);
    const refuse = (reason, error) => {
      bump('login_failure');
      event('LOGIN_FAILED', { username: /^[\w.@+-]{1,64}$/.test(username) ? username : '?', reason });
      return sendHtml(res, 401, loginPage(uid, { clientName, loginHint: username, error }));
    };
    if (!known || !safeEqual(password, passwordFor(username))) {
      return refuse('password', 'Invalid username or password.');
    }
    // An empty code is a password-only login; a wrong one fails like a wrong password.
    if (otp !== '' && !safeEqual(otp, otpFor(username))) {
      return refuse('otp', 'Invalid one-time code.');
    }
    const user = config.users[username];
    const stepUp = otp !== '';
    const acr = stepUp ? STEP_UP_ACR : user.acr;
    const amr = stepUp ? STEP_UP_AMR : user.amr;
    const words = (value) => (typeof value === 'string' ? value.split(' ').filter(Boolean) : undefined);
    bump('login');
    if (stepUp) bump('login_otp');
    event('LOGIN', {
      sub: username,
      acr,
      amr,
      // What the authorization request that led here asked for (e.g. a step-up's prompt=login).
      prompt: words(details.params.prompt),
      acr_values: words(details.params.acr_values),
      max_age: details.params.max_age,
    });
    return provider.interactionFinished(req, res, {
      login: {
        accountId: username,
        acr,
        amr,
        remember: true,
      },
    }, { mergeWithLastSubmission: false });
  }

  if (req.method === 'POST' && action === 'consent') {
    await readForm(req);
    if (details.prompt.name !== 'consent') return sendHtml(res, 400, page('Error', '<p>No consent pending.</p>'));
    const { prompt: { details: missing }, params, session } = details;
    let grant = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
    grant ??= new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, {
      mergeWithLastSubmission: true,
    });
  }

  return sendHtml(res, 405, page('Error', '<p>Method not allowed.</p>'));
}

async function handleAdmin(state, req, res, url) {
  const q = url.searchParams;
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case 'GET /__test/counts':
      return sendJson(res, 200, counts);
    case 'GET /__test/count': {
      const key = q.get('key');
      if (!knownCounter(key)) return sendJson(res, 404, { error: `no counter named ${JSON.stringify(key)}` });
      return send(res, 200, 'text/plain', `${counts[key] ?? 0}\n`);
    }
    case 'POST /__test/revoke': {
      const sub = q.get('sub');
      if (!sub) return sendJson(res, 400, { error: 'sub is required' });
      const grants = await state.revokeAccount(sub);
      event('REVOKED', { sub, grants });
      return sendJson(res, 200, { sub, grants });
    }
    case 'POST /__test/fail-token': {
      injected.failures = Number(q.get('count') ?? '1');
      injected.status = Number(q.get('status') ?? '503');
      if (!Number.isInteger(injected.failures) || !Number.isInteger(injected.status)
        || injected.status < 200 || injected.status > 599) {
        injected.failures = 0;
        return sendJson(res, 400, { error: 'count and status must be integers' });
      }
      event('INJECT', { token_failures: injected.failures, status: injected.status });
      return sendJson(res, 200, { failures: injected.failures, status: injected.status });
    }
    case 'POST /__test/delay-token': {
      const ms = Number(q.get('ms') ?? '0');
      if (!Number.isInteger(ms) || ms < 0) return sendJson(res, 400, { error: 'ms must be an integer' });
      injected.delayMs = ms;
      event('INJECT', { token_delay_ms: ms });
      return sendJson(res, 200, { delay_ms: ms });
    }
    case 'POST /__test/tamper-id-token': {
      const mode = q.get('mode');
      const count = Number(q.get('count') ?? '1');
      if (!TAMPER_MODES.includes(mode) || !Number.isInteger(count) || count < 0) {
        return sendJson(res, 400, { error: `mode must be one of ${TAMPER_MODES.join(', ')}; count an integer` });
      }
      tamper.mode = mode;
      tamper.count = count;
      event('INJECT', { tamper_id_token: mode, count });
      return sendJson(res, 200, { mode, count });
    }
    case 'POST /__test/sign': {
      let body;
      try {
        body = await readJson(req);
      } catch (err) {
        return sendJson(res, err.status ?? 400, { error: err.message });
      }
      const { payload, header, key } = body ?? {};
      if (payload === undefined || payload === null) return sendJson(res, 400, { error: 'payload is required' });
      if (header !== undefined && (header === null || typeof header !== 'object' || Array.isArray(header))) {
        return sendJson(res, 400, { error: 'header must be an object' });
      }
      if (!SIGN_KEYS.includes(key)) {
        return sendJson(res, 400, { error: `key must be one of ${SIGN_KEYS.join(', ')}` });
      }
      const token = signForTest({ payload, header, key });
      bump(`signed:${key}`);
      event('SIGNED', { key });
      return sendJson(res, 200, { token });
    }
    case 'POST /__test/capture-tokens':
      tamper.capture = true;
      return sendJson(res, 200, {});
    case 'GET /__test/tokens':
      return sendJson(res, 200, tamper.captured);
    case 'POST /__test/reset':
      injected.failures = 0;
      injected.delayMs = 0;
      tamper.count = 0;
      tamper.capture = false;
      tamper.captured = [];
      event('INJECT', { reset: 'yes' });
      return sendJson(res, 200, {});
    default:
      return sendJson(res, 404, { error: 'unknown admin route' });
  }
}

// RP-initiated logout with a valid id_token_hint: confirm on the user's behalf, so the browser
// goes straight to post_logout_redirect_uri. Runs the provider's own logout twice over loopback
// (render, then confirm) and relays the outcome with every cookie it set.
async function autoLogout(state, req, res) {
  const base = state.issuer;
  const cookies = new Map();
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) cookies.set(part.slice(0, i).trim(), part.slice(i + 1).trim());
  }
  const cookieHeader = () => [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  const setCookies = [];
  const absorb = (response) => {
    for (const line of response.headers.getSetCookie()) {
      setCookies.push(line);
      const pair = line.split(';', 1)[0];
      const i = pair.indexOf('=');
      if (i > 0) cookies.set(pair.slice(0, i).trim(), pair.slice(i + 1).trim());
    }
  };
  const relay = async (response) => {
    const headers = { 'cache-control': 'no-store' };
    for (const name of ['content-type', 'location']) {
      const value = response.headers.get(name);
      if (value) headers[name] = value;
    }
    if (setCookies.length) headers['set-cookie'] = setCookies;
    res.writeHead(response.status, headers);
    res.end(Buffer.from(await response.arrayBuffer()));
  };

  const first = await fetch(new URL(req.url, base), {
    headers: { cookie: cookieHeader(), accept: 'text/html', 'x-idp-internal': '1' },
    redirect: 'manual',
  });
  absorb(first);
  const html = first.status === 200 ? await first.clone().text() : '';
  const xsrf = /name="xsrf" value="([^"]*)"/.exec(html)?.[1];
  if (!xsrf) return relay(first);

  const second = await fetch(new URL('/session/end/confirm', base), {
    method: 'POST',
    headers: {
      cookie: cookieHeader(),
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'text/html',
      'x-idp-internal': '1',
    },
    body: new URLSearchParams({ xsrf: xsrf.replace(/&amp;/g, '&'), logout: 'yes' }).toString(),
    redirect: 'manual',
  });
  absorb(second);
  return relay(second);
}

function makeHandler(state) {
  const callback = state.provider.callback();
  return async (req, res) => {
    const url = new URL(req.url, state.issuer);
    try {
      if (config.admin && url.pathname.startsWith('/__test/')) {
        return await handleAdmin(state, req, res, url);
      }
      if (url.pathname.startsWith('/interaction/')) {
        return await handleInteraction(state, req, res, url);
      }
      if (url.pathname === '/token' && req.method === 'POST'
        && (tamper.count > 0 || tamper.capture)
        && req.headers['x-idp-internal'] === undefined) {
        return await tokenThroughHooks(state, req, res);
      }
      if (url.pathname === '/token' && req.method === 'POST') {
        if (injected.delayMs) await sleep(injected.delayMs);
        if (injected.failures > 0) {
          injected.failures -= 1;
          bump('token_injected_failure');
          event('TOKEN_INJECTED_FAILURE', { status: injected.status });
          req.resume();
          return sendJson(res, injected.status, {
            error: injected.status >= 500 ? 'temporarily_unavailable' : 'invalid_grant',
            error_description: 'failure injected by the test harness',
          });
        }
      }
      if (url.pathname === '/session/end' && req.method === 'GET'
        && config.logout_prompt === 'without_hint'
        && url.searchParams.has('id_token_hint')
        && req.headers['x-idp-internal'] === undefined) {
        return await autoLogout(state, req, res);
      }
      if (url.pathname === '/me') {
        res.on('finish', () => {
          bump(`userinfo:${res.statusCode}`);
          event('USERINFO', { status: res.statusCode });
        });
      }
      return callback(req, res);
    } catch (err) {
      event('HARNESS_ERROR', { path: url.pathname, error: err.message });
      if (!res.headersSent) sendJson(res, err.status ?? 500, { error: 'server_error' });
      else res.destroy();
      return undefined;
    }
  };
}

// ---------------------------------------------------------------------------------------------
// Start / stop
// ---------------------------------------------------------------------------------------------

const state = {};
const server = http.createServer((req, res) => {
  if (state.handler) return state.handler(req, res);
  return send(res, 503, 'text/plain', 'starting\n');
});

server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${config.port}: ${err.message}`));

server.listen(config.port, '127.0.0.1', async () => {
  const { port } = server.address();
  state.issuer = `http://127.0.0.1:${port}`;
  try {
    Object.assign(state, buildProvider(state.issuer));
    // oidc-provider checks static clients on first use; check them now so a bad one fails the
    // start, not the first login.
    for (const { client_id: id } of config.clients) await state.provider.Client.find(id);
  } catch (err) {
    fail(`invalid configuration: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}`);
  }
  state.handler = makeHandler(state);
  process.stdout.write(`READY ${state.issuer}\n`);
});

function shutdown(signal) {
  event('STOPPING', { signal });
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
