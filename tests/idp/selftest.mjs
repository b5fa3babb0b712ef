// Self-test for the test IdP: starts server.js on a free port and drives it the way a browser
// without JavaScript and a confidential OIDC client would. Exits 0 on success.
//
//   cd tests/idp && npm ci && node selftest.mjs

import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

const CLIENT_ID = 'selftest';
const CLIENT_SECRET = 'selftest-secret-value';
const REDIRECT_URI = 'http://127.0.0.1:9/callback';
const POST_LOGOUT_URI = 'http://127.0.0.1:9/logged-out';

let step = 'start';
function check(condition, message) {
  if (!condition) throw new Error(`${step}: ${message}`);
}

// ---------------------------------------------------------------------------------------------
// The IdP process
// ---------------------------------------------------------------------------------------------

function startIdp(cfg, env = {}) {
  const child = spawn(process.execPath, [path.join(here, 'server.js'), JSON.stringify(cfg)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  const lines = [];
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const ready = new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no READY line in 10s; stderr:\n${stderr}`)), 10000);
    child.stdout.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        lines.push(line);
        if (line.startsWith('READY ')) {
          clearTimeout(timer);
          resolve(line.slice(6));
        }
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server.js exited with ${code}; stderr:\n${stderr}`));
    });
  });
  const exited = new Promise((resolve) => { child.on('exit', (code, signal) => resolve({ code, signal })); });
  return { child, lines, ready, exited, stderr: () => stderr };
}

// ---------------------------------------------------------------------------------------------
// A browser without JavaScript: cookie jar, manual redirects, form posting
// ---------------------------------------------------------------------------------------------

class Browser {
  constructor() {
    this.cookies = []; // { host, path, name, value }
  }

  cookieHeader(url) {
    return this.cookies
      .filter((c) => c.host === url.hostname && url.pathname.startsWith(c.path))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  store(url, response) {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const i = pair.indexOf('=');
      const name = pair.slice(0, i);
      const value = pair.slice(i + 1);
      let cpath = url.pathname.replace(/\/[^/]*$/, '') || '/';
      let expired = value === '';
      for (const attr of attrs) {
        const [k, v = ''] = attr.split('=');
        if (k.toLowerCase() === 'path') cpath = v;
        if (k.toLowerCase() === 'expires' && Date.parse(v) < Date.now()) expired = true;
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
      }
      this.cookies = this.cookies.filter((c) => !(c.host === url.hostname && c.path === cpath && c.name === name));
      if (!expired) this.cookies.push({ host: url.hostname, path: cpath, name, value });
    }
  }

  async request(method, url, body) {
    url = new URL(url);
    const headers = { accept: 'text/html,application/xhtml+xml' };
    const cookie = this.cookieHeader(url);
    if (cookie) headers.cookie = cookie;
    if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
    const response = await fetch(url, { method, headers, body, redirect: 'manual' });
    this.store(url, response);
    return { url, status: response.status, location: response.headers.get('location'), body: await response.text() };
  }

  // Follows redirects until a non-redirect response, or until the Location starts with `stopAt`.
  async follow(first, stopAt) {
    let res = first;
    for (let hops = 0; hops < 20; hops += 1) {
      if (![301, 302, 303, 307, 308].includes(res.status)) return res;
      const next = new URL(res.location, res.url);
      if (stopAt && next.href.startsWith(stopAt)) return { ...res, stopped: next };
      res = await this.request('GET', next);
    }
    throw new Error('too many redirects');
  }

  async get(url, stopAt) {
    return this.follow(await this.request('GET', url), stopAt);
  }

  async submit(page, fields, stopAt) {
    const form = parseForms(page.body)[0];
    check(form, `expected a form on ${page.url.pathname}, got: ${page.body.slice(0, 300)}`);
    const data = new URLSearchParams(form.fields);
    for (const [k, v] of Object.entries(fields)) data.set(k, v);
    const action = new URL(form.action || page.url.href, page.url);
    const res = await this.request(form.method, action, form.method === 'POST' ? data.toString() : undefined);
    return this.follow(res, stopAt);
  }
}

const decodeEntities = (s) => s
  .replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>')
  .replace(/&amp;/g, '&');

function attr(tag, name) {
  const m = new RegExp(`\\s${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)'|([^\\s>]+))`, 'i').exec(tag);
  return m ? decodeEntities(m[1] ?? m[2] ?? m[3]) : undefined;
}

function parseForms(html) {
  const forms = [];
  for (const m of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const fields = [];
    for (const input of m[2].matchAll(/<input\b[^>]*>/gi)) {
      const name = attr(input[0], 'name');
      const type = (attr(input[0], 'type') ?? 'text').toLowerCase();
      if (name && !['submit', 'button', 'image', 'reset'].includes(type)) {
        fields.push([name, attr(input[0], 'value') ?? '']);
      }
    }
    forms.push({
      action: attr(`<form${m[1]}>`, 'action'),
      method: (attr(`<form${m[1]}>`, 'method') ?? 'GET').toUpperCase(),
      fields,
    });
  }
  return forms;
}

// ---------------------------------------------------------------------------------------------
// The relying party side
// ---------------------------------------------------------------------------------------------

const b64url = (buf) => Buffer.from(buf).toString('base64url');

function pkce() {
  const verifier = b64url(crypto.randomBytes(32));
  const challenge = b64url(crypto.createHash('sha256').update(verifier).digest());
  return { verifier, challenge };
}

async function json(url, init) {
  const res = await fetch(url, init);
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = { raw: text };
  }
  return { status: res.status, body };
}

const basic = (id, secret) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

async function tokenRequest(discovery, params, auth = 'basic') {
  const headers = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
  const body = new URLSearchParams(params);
  if (auth === 'basic') headers.authorization = basic(CLIENT_ID, CLIENT_SECRET);
  else {
    body.set('client_id', CLIENT_ID);
    body.set('client_secret', CLIENT_SECRET);
  }
  return json(discovery.token_endpoint, { method: 'POST', headers, body });
}

async function verifyJwt(jwt, jwksUri, alg = 'RS256') {
  const [h, p, s] = jwt.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  const payload = JSON.parse(Buffer.from(p, 'base64url'));
  const { body: jwks } = await json(jwksUri);
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  check(jwk, `no JWKS key with kid ${header.kid}`);
  check(header.alg === alg, `unexpected alg ${header.alg}`);
  const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  const data = Buffer.from(`${h}.${p}`);
  const sig = Buffer.from(s, 'base64url');
  const ok = {
    RS256: () => crypto.verify('sha256', data, key, sig),
    ES256: () => crypto.verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig),
    EdDSA: () => crypto.verify(null, data, key, sig),
  }[alg]();
  check(ok, 'JWT signature does not verify against the JWKS');
  return payload;
}

function authUrl(discovery, { state, nonce, challenge, scope = 'openid email profile groups', extra = {} }) {
  const url = new URL(discovery.authorization_endpoint);
  const params = {
    response_type: 'code',
    client_id: CLIENT_ID,
    redirect_uri: REDIRECT_URI,
    scope,
    state,
    nonce,
    ...(challenge ? { code_challenge: challenge, code_challenge_method: 'S256' } : {}),
    ...extra,
  };
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return url;
}

// Full login as `username`; returns the callback URL's parameters plus the PKCE verifier.
async function login(browser, discovery, username, { password = 'password', otp, scope, extra } = {}) {
  const state = b64url(crypto.randomBytes(16));
  const nonce = b64url(crypto.randomBytes(16));
  const { verifier, challenge } = pkce();
  let res = await browser.get(authUrl(discovery, { state, nonce, challenge, scope, extra }), REDIRECT_URI);
  if (!res.stopped) {
    check(res.status === 200, `login page: expected 200, got ${res.status}`);
    check(/name="username"/.test(res.body) && /name="password"/.test(res.body), 'login page has no username/password fields');
    res = await browser.submit(res, { username, password, ...(otp ? { otp } : {}) }, REDIRECT_URI);
  }
  check(res.stopped, `login did not end at the redirect_uri (status ${res.status}): ${res.body.slice(0, 300)}`);
  const params = res.stopped.searchParams;
  check(params.get('state') === state, 'state mismatch on the callback');
  check(!params.get('error'), `callback error ${params.get('error')}: ${params.get('error_description')}`);
  check(params.get('iss') === discovery.issuer, 'iss parameter missing or wrong on the callback');
  check(params.get('code'), 'no code on the callback');
  return { code: params.get('code'), verifier, nonce };
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

async function main() {
  const idp = startIdp({
    port: 0,
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: [REDIRECT_URI],
      post_logout_redirect_uris: [POST_LOGOUT_URI],
    }, {
      client_id: 'svc',
      client_secret: 'svc-secret',
      grant_types: ['client_credentials'],
    }],
    ttl: { id_token: 5, access_token: 5 },
    users: { erin: { email: 'erin@example.org', groups: ['auditors'], claims: { department: 'audit' } } },
    resource_servers: { 'https://api.test': { scope: 'orders:read orders:write', access_token_ttl: 60 } },
  });
  const ok = (msg) => console.log(`ok - ${msg}`);

  try {
    const issuer = await idp.ready;
    ok(`started, ${issuer}`);
    check(/^http:\/\/127\.0\.0\.1:\d+$/.test(issuer), `unexpected issuer ${issuer}`);

    step = 'discovery';
    const { body: discovery } = await json(`${issuer}/.well-known/openid-configuration`);
    check(discovery.issuer === issuer, 'discovery issuer');
    check(discovery.code_challenge_methods_supported?.includes('S256'), 'S256 not supported');
    for (const s of ['openid', 'email', 'profile', 'groups', 'offline_access']) {
      check(discovery.scopes_supported.includes(s), `scope ${s} missing`);
    }
    check(discovery.end_session_endpoint && discovery.userinfo_endpoint, 'endpoints missing');
    ok('discovery document');

    step = 'pkce required';
    {
      const browser = new Browser();
      const res = await browser.get(authUrl(discovery, { state: 'x', nonce: 'y' }), REDIRECT_URI);
      check(res.stopped?.searchParams.get('error') === 'invalid_request', 'a request without PKCE was not refused');
      ok('authorization request without code_challenge is refused');
    }

    step = 'wrong password';
    const browser = new Browser();
    {
      const res = await browser.get(authUrl(discovery, { state: 's', nonce: 'n', challenge: pkce().challenge }), REDIRECT_URI);
      check(res.status === 200, `login page status ${res.status}`);
      const again = await browser.submit(res, { username: 'bob', password: 'wrong' }, REDIRECT_URI);
      check(again.status === 401 && /name="username"/.test(again.body), `expected the form again with 401, got ${again.status}`);
      ok('wrong password shows the form again (401)');
    }

    step = 'login';
    const { code, verifier, nonce } = await login(browser, discovery, 'bob');
    ok('login form posted, redirected to the redirect_uri with code, state and iss');

    step = 'code exchange';
    const bad = await tokenRequest(discovery, {
      grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: pkce().verifier,
    });
    check(bad.status === 400 && bad.body.error === 'invalid_grant', `wrong verifier accepted: ${JSON.stringify(bad.body)}`);
    ok('wrong code_verifier is refused');
    const tok = await tokenRequest(discovery, {
      grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier,
    });
    check(tok.status === 200, `token endpoint ${tok.status}: ${JSON.stringify(tok.body)}`);
    check(tok.body.id_token && tok.body.access_token && tok.body.refresh_token, `missing tokens: ${Object.keys(tok.body)}`);
    check(tok.body.token_type === 'Bearer', 'token_type');
    check(tok.body.expires_in <= 5, `expires_in ${tok.body.expires_in} > 5`);
    ok(`code exchanged (client_secret_basic); expires_in=${tok.body.expires_in}; refresh token issued`);

    step = 'id token';
    const claims = await verifyJwt(tok.body.id_token, discovery.jwks_uri);
    check(claims.iss === issuer, `iss ${claims.iss}`);
    check(claims.aud === CLIENT_ID, `aud ${claims.aud}`);
    check(claims.nonce === nonce, 'nonce');
    check(claims.sub === 'bob', `sub ${claims.sub}`);
    check(claims.email === 'bob@example.com', `email ${claims.email}`);
    check(claims.email_verified === true, 'email_verified');
    check(claims.preferred_username === 'bob' && claims.name === 'Bob Example', 'profile claims');
    check(JSON.stringify(claims.groups) === '["staff"]', `groups ${JSON.stringify(claims.groups)}`);
    check(claims.amr?.includes('mfa'), `amr ${JSON.stringify(claims.amr)}`);
    check(claims.acr === 'urn:portcullis:test:loa:2', `acr ${claims.acr}`);
    check(claims.exp - claims.iat === 5, `ID token lifetime ${claims.exp - claims.iat}`);
    ok('ID token: signature, iss, aud, nonce, sub, email, groups, amr=mfa, acr, 5 s lifetime');

    step = 'userinfo';
    const ui = await json(discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${tok.body.access_token}` } });
    check(ui.status === 200, `userinfo ${ui.status}: ${JSON.stringify(ui.body)}`);
    check(ui.body.sub === 'bob' && ui.body.email === 'bob@example.com', 'userinfo sub/email');
    check(JSON.stringify(ui.body.groups) === '["staff"]', 'userinfo groups');
    ok('userinfo');

    step = 'refresh';
    const ref = await tokenRequest(discovery, { grant_type: 'refresh_token', refresh_token: tok.body.refresh_token }, 'post');
    check(ref.status === 200, `refresh ${ref.status}: ${JSON.stringify(ref.body)}`);
    check(ref.body.access_token && ref.body.access_token !== tok.body.access_token, 'new access token');
    check(ref.body.refresh_token && ref.body.refresh_token !== tok.body.refresh_token, 'refresh token rotated');
    const refreshed = await verifyJwt(ref.body.id_token, discovery.jwks_uri);
    check(refreshed.sub === 'bob' && refreshed.email === 'bob@example.com', 'refreshed ID token claims');
    check(refreshed.amr?.includes('mfa'), 'amr kept on refresh');
    const ui2 = await json(discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${ref.body.access_token}` } });
    check(ui2.status === 200, 'userinfo with the refreshed access token');
    ok('refresh (client_secret_post): new access, ID and refresh tokens');

    step = 'token expiry';
    await new Promise((r) => { setTimeout(r, 6000); });
    const expired = await json(discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${tok.body.access_token}` } });
    check(expired.status === 401, `expired access token accepted (${expired.status})`);
    ok('access token expires after 5 s');

    step = 'grant log';
    const grantLines = idp.lines.filter((l) => l.startsWith('GRANT '));
    check(grantLines.filter((l) => l.includes('grant_type=refresh_token')).length === 1, `refresh lines: ${grantLines}`);
    check(idp.lines.filter((l) => l.startsWith('GRANT_ERROR grant_type=authorization_code')).length === 1, 'GRANT_ERROR lines');
    check(grantLines.some((l) => l === `GRANT grant_type=authorization_code client_id=${CLIENT_ID} sub=bob`), `grant lines: ${grantLines}`);
    const { body: counts } = await json(`${issuer}/__test/counts`);
    check(counts['grant:refresh_token'] === 1 && counts['grant:authorization_code'] === 1, `counts ${JSON.stringify(counts)}`);
    ok(`stdout: ${grantLines.join(' | ')}`);

    step = 'logout with id_token_hint';
    const endUrl = new URL(discovery.end_session_endpoint);
    endUrl.searchParams.set('id_token_hint', ref.body.id_token);
    endUrl.searchParams.set('post_logout_redirect_uri', POST_LOGOUT_URI);
    endUrl.searchParams.set('state', 'bye');
    const out = await browser.get(endUrl, POST_LOGOUT_URI);
    check(out.stopped, `logout did not redirect to post_logout_redirect_uri: ${out.status} ${out.body.slice(0, 300)}`);
    check(out.stopped.searchParams.get('state') === 'bye', 'state on post_logout_redirect_uri');
    check(!browser.cookies.some((c) => c.name === '_session'), 'IdP session cookie not cleared');
    check(idp.lines.some((l) => l.startsWith('LOGOUT ')), 'no LOGOUT line');
    ok('end_session with id_token_hint: no confirmation, straight to post_logout_redirect_uri with state');

    step = 'logout with id_token_hint, no IdP session';
    {
      const out2 = await new Browser().get(endUrl, POST_LOGOUT_URI);
      check(out2.stopped?.searchParams.get('state') === 'bye', `logout without an IdP session: ${out2.status} ${out2.body.slice(0, 200)}`);
      ok('end_session with id_token_hint and no IdP session cookie: straight to post_logout_redirect_uri');
    }

    step = 'after logout';
    const dead = await tokenRequest(discovery, { grant_type: 'refresh_token', refresh_token: ref.body.refresh_token });
    check(dead.status === 400 && dead.body.error === 'invalid_grant', `refresh after logout: ${dead.status} ${JSON.stringify(dead.body)}`);
    const fresh = await browser.get(authUrl(discovery, { state: 's', nonce: 'n', challenge: pkce().challenge }), REDIRECT_URI);
    check(!fresh.stopped && /name="password"/.test(fresh.body), 'the IdP session survived logout');
    ok('after logout the refresh token is dead and the IdP asks for a password again');

    step = 'logout without hint';
    {
      const b2 = new Browser();
      await login(b2, discovery, 'alice');
      const res = await b2.get(discovery.end_session_endpoint);
      check(res.status === 200 && parseForms(res.body).length === 1, `no confirmation form: ${res.status}`);
      const done = await b2.submit(res, {});
      check(done.status === 200 && /Signed out/.test(done.body), `confirmation form post: ${done.status} ${done.body.slice(0, 200)}`);
      ok('end_session without id_token_hint: one plain confirmation form, posted, signed out');
    }

    step = 'extra user and claims';
    {
      const b3 = new Browser();
      const r = await login(b3, discovery, 'erin');
      const t = await tokenRequest(discovery, {
        grant_type: 'authorization_code', code: r.code, redirect_uri: REDIRECT_URI, code_verifier: r.verifier,
      });
      const c = await verifyJwt(t.body.id_token, discovery.jwks_uri);
      check(c.email === 'erin@example.org' && c.department === 'audit' && c.groups[0] === 'auditors', `claims ${JSON.stringify(c)}`);
      ok('configured user with an extra claim');

      step = 'admin hooks';
      const inj = await json(`${issuer}/__test/fail-token?count=1&status=503`, { method: 'POST' });
      check(inj.status === 200, 'fail-token hook');
      const failed = await tokenRequest(discovery, { grant_type: 'refresh_token', refresh_token: t.body.refresh_token });
      check(failed.status === 503, `injected failure not served: ${failed.status}`);
      const fine = await tokenRequest(discovery, { grant_type: 'refresh_token', refresh_token: t.body.refresh_token });
      check(fine.status === 200, `token endpoint did not recover: ${fine.status}`);
      ok('fail-token: next token request answered 503, the one after works');

      const reuse = await tokenRequest(discovery, { grant_type: 'refresh_token', refresh_token: t.body.refresh_token });
      check(reuse.status === 400 && reuse.body.error === 'invalid_grant', 'a rotated refresh token was accepted twice');
      ok('reusing a rotated refresh token is refused');

      const r2 = await login(new Browser(), discovery, 'erin');
      const t2 = await tokenRequest(discovery, {
        grant_type: 'authorization_code', code: r2.code, redirect_uri: REDIRECT_URI, code_verifier: r2.verifier,
      });
      const rev = await json(`${issuer}/__test/revoke?sub=erin`, { method: 'POST' });
      check(rev.status === 200 && rev.body.grants >= 1, `revoke hook: ${JSON.stringify(rev.body)}`);
      const revoked = await tokenRequest(discovery, { grant_type: 'refresh_token', refresh_token: t2.body.refresh_token });
      check(revoked.status === 400 && revoked.body.error === 'invalid_grant', `refresh after revoke: ${revoked.status}`);
      const uiRevoked = await json(discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${t2.body.access_token}` } });
      check(uiRevoked.status === 401, 'access token survived revoke');
      ok('revoke?sub=erin: refresh and access tokens refused');

      const r3 = await login(new Browser(), discovery, 'erin');
      const exchange = { grant_type: 'authorization_code', code: r3.code, redirect_uri: REDIRECT_URI, code_verifier: r3.verifier };
      const t3 = await tokenRequest(discovery, exchange);
      check(t3.status === 200, 'code exchange');
      const replay = await tokenRequest(discovery, exchange);
      check(replay.status === 400 && replay.body.error === 'invalid_grant', 'a used code was accepted again');
      const afterReplay = await json(discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${t3.body.access_token}` } });
      check(afterReplay.status === 401, 'tokens from a replayed code survived');
      ok('a replayed code is refused and revokes the tokens issued from it');
    }

    step = 'jwt access token for a resource server';
    {
      const cc = await tokenRequest(discovery, { grant_type: 'client_credentials', resource: 'https://api.test', scope: 'orders:read' });
      check(cc.status === 403 || cc.status === 400, `client_credentials allowed for a client without that grant type: ${cc.status}`);
      const b4 = new Browser();
      const r = await login(b4, discovery, 'alice', { scope: 'openid email orders:read', extra: { resource: 'https://api.test' } });
      const t = await tokenRequest(discovery, {
        grant_type: 'authorization_code', code: r.code, redirect_uri: REDIRECT_URI, code_verifier: r.verifier,
      });
      check(t.status === 200, `code exchange ${JSON.stringify(t.body)}`);
      const jwt = await tokenRequest(discovery, { grant_type: 'refresh_token', refresh_token: t.body.refresh_token, resource: 'https://api.test' });
      check(jwt.status === 200, `refresh with resource: ${jwt.status} ${JSON.stringify(jwt.body)}`);
      const at = await verifyJwt(jwt.body.access_token, discovery.jwks_uri);
      check(at.aud === 'https://api.test' && at.sub === 'alice' && at.scope === 'orders:read' && at.iss === issuer, `JWT access token ${JSON.stringify(at)}`);
      ok('resource=https://api.test on the token request yields a JWT access token (aud, sub, scope)');
    }

    step = 'client_credentials';
    {
      const cc = await json(discovery.token_endpoint, {
        method: 'POST',
        headers: { authorization: basic('svc', 'svc-secret'), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'client_credentials', resource: 'https://api.test', scope: 'orders:read' }),
      });
      check(cc.status === 200, `client_credentials: ${cc.status} ${JSON.stringify(cc.body)}`);
      const at = await verifyJwt(cc.body.access_token, discovery.jwks_uri);
      check(at.aud === 'https://api.test' && at.client_id === 'svc' && at.scope === 'orders:read' && at.iss === issuer
        && at.exp - at.iat === 60, `client_credentials JWT ${JSON.stringify(at)}`);
      ok('client_credentials with resource=: JWT access token (aud, client_id, scope, resource server TTL)');
    }

    step = 'sign hook';
    {
      const sign = async (body) => (await json(`${issuer}/__test/sign`, { method: 'POST', body: JSON.stringify(body) })).body.token;
      const payload = { iss: issuer, aud: 'https://api.test', sub: 'x', exp: Math.floor(Date.now() / 1000) + 60 };
      const real = await sign({ payload, key: 'real' });
      const verified = await verifyJwt(real, discovery.jwks_uri);
      check(JSON.stringify(verified) === JSON.stringify(payload), 'real: payload not verbatim');
      const { body: jwksDoc } = await json(discovery.jwks_uri);
      const kidOf = (t) => JSON.parse(Buffer.from(t.split('.')[0], 'base64url')).kid;
      const fresh = await sign({ payload, key: 'fresh' });
      check(!jwksDoc.keys.some((k) => k.kid === kidOf(fresh)), 'fresh: kid is in the JWKS');
      const wrong = await sign({ payload, key: 'fresh', header: { kid: jwksDoc.keys[0].kid } });
      let refused = false;
      try {
        await verifyJwt(wrong, discovery.jwks_uri);
      } catch {
        refused = true;
      }
      check(refused && kidOf(wrong) === jwksDoc.keys[0].kid, 'fresh under the real kid verified');
      const none = await sign({ payload, key: 'none' });
      check(none.endsWith('.') && JSON.parse(Buffer.from(none.split('.')[0], 'base64url')).alg === 'none', 'none');
      const hs = await sign({ payload, key: 'hs256_jwks' });
      const [h, p, sig] = hs.split('.');
      const pem = crypto.createPublicKey({ key: jwksDoc.keys[0], format: 'jwk' }).export({ type: 'spki', format: 'pem' });
      check(crypto.createHmac('sha256', pem).update(`${h}.${p}`).digest('base64url') === sig, 'hs256_jwks: HMAC with the PEM');
      ok('/__test/sign: real verifies at the JWKS, fresh does not, none is unsigned, hs256_jwks is keyed with the PEM');
    }

    step = 'step-up login';
    {
      const b5 = new Browser();
      const first = await login(b5, discovery, 'alice');
      check(first.code, 'first login');
      const silent = await b5.get(authUrl(discovery, { state: 's', nonce: 'n', challenge: pkce().challenge }), REDIRECT_URI);
      check(silent.stopped, 'no silent login with a live IdP session');
      const form = await b5.get(authUrl(discovery, {
        state: 's', nonce: 'n', challenge: pkce().challenge, extra: { prompt: 'login', acr_values: 'urn:portcullis:test:loa:2' },
      }), REDIRECT_URI);
      check(!form.stopped && /name="otp"/.test(form.body), 'prompt=login did not show the form despite the session');
      const wrong = await b5.submit(form, { username: 'alice', password: 'password', otp: '000000' }, REDIRECT_URI);
      check(wrong.status === 401 && /name="otp"/.test(wrong.body), `wrong otp: ${wrong.status}`);
      const r = await login(b5, discovery, 'alice', { otp: '123456', extra: { prompt: 'login', acr_values: 'urn:portcullis:test:loa:2' } });
      const t = await tokenRequest(discovery, {
        grant_type: 'authorization_code', code: r.code, redirect_uri: REDIRECT_URI, code_verifier: r.verifier,
      });
      const c = await verifyJwt(t.body.id_token, discovery.jwks_uri);
      check(c.acr === 'urn:portcullis:test:loa:2' && JSON.stringify(c.amr) === '["pwd","otp","mfa"]', `step-up claims ${JSON.stringify(c)}`);
      check(idp.lines.includes('LOGIN sub=alice acr=urn:portcullis:test:loa:2 amr=pwd,otp,mfa prompt=login acr_values=urn:portcullis:test:loa:2'),
        `LOGIN lines: ${idp.lines.filter((l) => l.startsWith('LOGIN'))}`);
      ok('prompt=login shows the form despite a session; a wrong otp is 401; the right one gives loa:2, amr pwd otp mfa');
    }

    step = 'no secrets in the log';
    const log = idp.lines.join('\n');
    check(!log.includes(CLIENT_SECRET), 'client secret in stdout');
    check(!log.includes(tok.body.refresh_token) && !log.includes(tok.body.access_token), 'token in stdout');
    ok('stdout carries no secrets or tokens');

    step = 'SIGTERM';
    idp.child.kill('SIGTERM');
    const { code: exitCode, signal } = await idp.exited;
    check(exitCode === 0, `exit code ${exitCode} signal ${signal}`);
    ok('SIGTERM: clean exit 0');
  } catch (err) {
    fatal(err, idp);
  }

  // A second instance: the other settings, and the single-client environment variables.
  const other = startIdp({
    consent: 'form',
    logout_prompt: 'always',
    refresh_tokens: 'offline_access',
    id_token_claims: 'minimal',
    signing_alg: 'ES256',
  }, {
    IDP_CLIENT_ID: CLIENT_ID,
    IDP_CLIENT_SECRET: CLIENT_SECRET,
    IDP_REDIRECT_URIS: REDIRECT_URI,
    IDP_POST_LOGOUT_REDIRECT_URIS: POST_LOGOUT_URI,
    IDP_ID_TOKEN_TTL: '7',
  });
  try {
    step = 'second instance';
    const issuer = await other.ready;
    const { body: discovery } = await json(`${issuer}/.well-known/openid-configuration`);
    const browser = new Browser();
    const state = 'st';
    const { verifier, challenge } = pkce();
    let res = await browser.get(authUrl(discovery, {
      state, nonce: 'nn', challenge, scope: 'openid email groups offline_access', extra: { prompt: 'consent' },
    }), REDIRECT_URI);
    res = await browser.submit(res, { username: 'alice', password: 'password' }, REDIRECT_URI);
    check(res.status === 200 && /name="consent"/.test(res.body), `expected the consent form, got ${res.status}`);
    res = await browser.submit(res, {}, REDIRECT_URI);
    check(res.stopped?.searchParams.get('code'), `consent did not end at the redirect_uri: ${res.status}`);
    const tok = await tokenRequest(discovery, {
      grant_type: 'authorization_code', code: res.stopped.searchParams.get('code'), redirect_uri: REDIRECT_URI, code_verifier: verifier,
    }, 'post');
    check(tok.status === 200 && tok.body.refresh_token, `no refresh token with offline_access: ${JSON.stringify(tok.body)}`);
    const claims = await verifyJwt(tok.body.id_token, discovery.jwks_uri, 'ES256');
    check(claims.exp - claims.iat === 7, 'IDP_ID_TOKEN_TTL');
    check(claims.email === undefined && claims.groups === undefined, 'minimal ID token carries scope claims');
    const ui = await json(discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${tok.body.access_token}` } });
    check(ui.body.email === 'alice@example.com' && ui.body.groups.includes('admins'), 'userinfo claims');
    ok('consent form, offline_access refresh token, minimal ES256 ID token + userinfo claims, env config');

    const endUrl = new URL(discovery.end_session_endpoint);
    endUrl.searchParams.set('id_token_hint', tok.body.id_token);
    endUrl.searchParams.set('post_logout_redirect_uri', POST_LOGOUT_URI);
    const confirm = await browser.get(endUrl, POST_LOGOUT_URI);
    check(confirm.status === 200 && parseForms(confirm.body).length === 1, 'logout_prompt=always shows the form');
    const done = await browser.submit(confirm, {}, POST_LOGOUT_URI);
    check(done.stopped, 'confirmation form did not lead to post_logout_redirect_uri');
    const still = await tokenRequest(discovery, { grant_type: 'refresh_token', refresh_token: tok.body.refresh_token });
    check(still.status === 200, 'an offline_access refresh token did not survive logout');
    ok('logout_prompt=always: confirmation form; offline_access refresh token survives logout');
    other.child.kill('SIGTERM');
    await other.exited;
  } catch (err) {
    fatal(err, other);
  }
  console.log('selftest: PASS');
}

function fatal(err, idp) {
  console.error(`selftest: FAIL: ${err.message}`);
  console.error('--- IdP stdout ---');
  console.error(idp.lines.join('\n'));
  console.error('--- IdP stderr ---');
  console.error(idp.stderr());
  idp.child.kill('SIGKILL');
  process.exit(1);
}

main();
