// Test OpenID Provider for sidegate's integration tests and benchmark, built
// on the npm package `oidc-provider` (pinned in package-lock.json). Loopback
// only, in-memory state, fresh signing keys at every start.
//
// Protocol with the caller (a Rust test or bench/bench.sh):
//   stdout: exactly one line, `READY {"issuer":"http://127.0.0.1:<port>"}`,
//           once the port is listening; nothing else is ever written there.
//           With OP_API=1 the JSON object also has an "api" member (see
//           below); `issuer` is unchanged.
//   stderr: everything else (oidc-provider notices, access log, errors).
//   stdin:  keep it open; the process exits when it closes (so a crashed
//           test never leaves an OP behind), and on SIGTERM/SIGINT.
//
// Environment:
//   OP_REDIRECT_URIS   required; space/comma separated redirect URIs of the client
//   OP_PORT            listen port on 127.0.0.1 (default 0 = ephemeral)
//   OP_CLIENT_ID       default `sidegate`
//   OP_CLIENT_SECRET   default `sidegate-secret`
//   OP_CLIENT_AUTH     token_endpoint_auth_method (client_secret_basic |
//                      client_secret_post; default client_secret_basic)
//   OP_PKCE_REQUIRED   1 = every client must use PKCE (default); 0 = only
//                      public clients must
//   OP_ACCESS_LOG      1 = one line per request (to stderr)
//
// Opt-in API (bearer token) support, all off unless OP_API=1; without it the
// provider, its clients, keys and discovery document are exactly as above.
//   OP_API                     1 = enable: client credentials grant, resource
//                              indicators, an ES256 key (added after the RSA
//                              one; ID tokens stay RS256) and the two clients
//   OP_API_CLIENT_ID           default `api-client`: grant_types
//                              [client_credentials], client_secret_basic
//   OP_API_CLIENT_SECRET       default `api-secret`
//   OP_API_INTROSPECTOR_ID     default `introspector`: no grants, only
//                              authenticates (client_secret_basic) to the
//                              introspection endpoint
//   OP_API_INTROSPECTOR_SECRET default `introspector-secret`
//   OP_API_TOKEN_TTL           seconds a client-credentials token lives
//                              (default 600)
// Resource servers (request them with `resource=<URL>&scope=api:read` on a
// client_credentials token request by the API client; any other client,
// the login client included, still gets invalid_target for a `resource`):
//   https://api.sidegate.test     JWT access tokens (RFC 9068, typ at+jwt,
//                                 ES256), aud = this URL
//   https://opaque.sidegate.test  opaque access tokens, aud = this URL
// Both know the one scope `api:read`. Client-credentials tokens of the API
// client carry preferred_username=<client id>, role=developer,
// groups=[api-clients] and sub=<client id>, in the JWT and in the
// introspection response alike. The introspector and the API client may
// introspect any token, the login client's included (oidc-provider also
// accepts client_secret_post from a client_secret_basic client). JWT access
// tokens cannot be introspected (400 unsupported_token_type).
// READY then reads {"issuer":...,"api":{"client_id","client_secret",
// "introspector_id","introspector_secret","scope":"api:read",
// "resources":{"jwt":"https://api.sidegate.test",
// "opaque":"https://opaque.sidegate.test"}}}.
//
// Opt-in logout support for the login client (OP_CLIENT_ID), all off unless
// set; without them the client, discovery and logout page are as before
// (RP-initiated logout at end_session_endpoint is always on, and the client's
// post_logout_redirect_uris default to the origins (`/`) of OP_REDIRECT_URIS).
//   OP_POST_LOGOUT_REDIRECT_URIS  space/comma separated; replaces that default
//                      list. end_session accepts client_id=<login client>
//                      (no id_token_hint needed) with
//                      post_logout_redirect_uri=<one of these>&state=<x>
//   OP_BACKCHANNEL_LOGOUT_URI     enables OIDC Back-Channel Logout:
//                      backchannel_logout_uri of the client (http is fine),
//                      backchannel_logout_session_required=true, so its ID
//                      tokens carry `sid`. Confirming a logout POSTs
//                      `logout_token=<JWT>` (form) to it, once per client of
//                      the OP session that has such a URI, before the
//                      redirect; the URI must answer 200 or 204.
//   OP_FRONTCHANNEL_LOGOUT_URI    OIDC Front-Channel Logout, EMULATED here
//                      (oidc-provider 9 has no such feature): registered as
//                      the client's frontchannel_logout_uri (session
//                      required; ID tokens then carry `sid`), discovery
//                      says frontchannel_logout_(session_)supported. A
//                      confirmed logout then answers 200 with a page of
//                      `<iframe class="op-frontchannel-logout" src="<uri>?iss=
//                      <issuer>&amp;sid=<sid>">` (one per such client of the
//                      session) whose first <form> is a GET to where the 303
//                      would have gone (see frontchannelPage below).
//   OP_TEST_ENDPOINTS  1 = `POST /test/end-sessions?sub=<account>` ends every
//                      OP session of that account without a browser, as a
//                      confirmed logout would: back-channel logout to each
//                      client of the session with a backchannel_logout_uri,
//                      grants revoked, session destroyed. Answers 200 JSON
//                      {"sub","sessions":<n>,"backchannel":[{"client_id",
//                      "sid","ok",("error")}]}.
// With any of the first three set, the logout confirmation page is plain
// HTML whose first <form> is "yes, sign me out" (hidden xsrf and logout=yes),
// the second "no, stay signed in"; POST it and the OP answers 303 to
// post_logout_redirect_uri?state=<x> (or to its own /session/end/success).
//
// Opt-in refresh tokens for the login client, off unless OP_REFRESH=1 (the
// client always lists grant_types [authorization_code, refresh_token] and
// discovery is the same either way; without OP_REFRESH the library's default
// rules stay: a refresh token only for scope offline_access, which it honours
// only with prompt=consent, and rotation only after 70% of its lifetime).
//   OP_REFRESH         1 = every authorization code exchange of the login
//                      client answers a refresh_token, with or without
//                      offline_access. Without offline_access (or without
//                      prompt=consent, which the library requires to keep
//                      offline_access) the token is bound to the OP session:
//                      it dies with a logout there or /test/end-sessions.
//                      With offline_access+prompt=consent it outlives both.
//                      Refresh: POST token_endpoint, client authentication
//                      as for the code (OP_CLIENT_AUTH),
//                      grant_type=refresh_token&refresh_token=<rt>
//                      (optional scope= a subset); the answer has
//                      access_token, expires_in, id_token, refresh_token,
//                      scope, token_type. The ID token is built from the
//                      user's claims at that moment (see /test/claims); it
//                      keeps the login's nonce (and sid when logout asks for
//                      sid), with new iat/exp.
//                      Every refresh token is single use (rotation): the
//                      answer's refresh_token is new, the presented one is
//                      consumed. Presenting a consumed one is invalid_grant
//                      ("refresh token already used") AND the library takes
//                      it for theft: it revokes the whole grant, so the
//                      newer refresh token and the grant's access tokens die
//                      too ("refresh token not found" from then on); the OP
//                      session stays, a new login only asks consent again.
//                      Two concurrent refreshes with one token: one wins, the
//                      other is that reuse (and kills the winner's tokens).
//   OP_REFRESH_TTL     seconds a refresh token lives (default 3600 with
//                      OP_REFRESH=1, else 86400 as before); counted again
//                      from every rotation (sliding), capped by the grant
//                      (86400 s) and, if bound to it, the OP session
//   OP_ID_TOKEN_TTL    seconds ID tokens and the login client's access
//                      tokens live (exp, expires_in; default 3600)
// With OP_TEST_ENDPOINTS=1 also (JSON answers):
//   POST /test/claims?sub=<account>   body: a JSON object merged into that
//                      user's claims (a null member deletes the claim; sub
//                      cannot change), e.g. {"role":"viewer","groups":["x"]}.
//                      Later ID tokens (login or refresh) and userinfo show
//                      it. Answers {"sub","claims":{...}}; 404 unknown sub.
//   GET /test/stats    {"refresh_grants":<n>,"refresh_invalid_grant":<m>}:
//                      refresh_token grant requests that succeeded, and that
//                      failed with invalid_grant (each failure's reason goes
//                      to stderr), since start.
//
// Users (password `<name>-pw`): alice (admin), bob (developer),
// carol (viewer, email not verified), dave (superuser: a role outside a
// typical allow-list).
import crypto from 'node:crypto';
import http from 'node:http';
import querystring from 'node:querystring';

import Provider, { errors } from 'oidc-provider';

// stdout carries only the READY line: oidc-provider prints its notices with
// console.info, so route the console's stdout methods to stderr.
console.log = console.error;
console.info = console.error;
console.debug = console.error;

function fail(msg) {
  console.error(`provider.mjs: ${msg}`);
  process.exit(2);
}

const port = Number(process.env.OP_PORT || 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad OP_PORT ${process.env.OP_PORT}`);
const redirectUris = (process.env.OP_REDIRECT_URIS || '').split(/[\s,]+/).filter(Boolean);
if (redirectUris.length === 0) fail('OP_REDIRECT_URIS is required (space/comma separated)');
const clientId = process.env.OP_CLIENT_ID || 'sidegate';
const clientSecret = process.env.OP_CLIENT_SECRET || 'sidegate-secret';
const clientAuth = process.env.OP_CLIENT_AUTH || 'client_secret_basic';
const pkceRequiredForAll = (process.env.OP_PKCE_REQUIRED ?? '1') !== '0';
const accessLog = process.env.OP_ACCESS_LOG === '1';
const apiEnabled = process.env.OP_API === '1';
const apiClientId = process.env.OP_API_CLIENT_ID || 'api-client';
const apiClientSecret = process.env.OP_API_CLIENT_SECRET || 'api-secret';
const introspectorId = process.env.OP_API_INTROSPECTOR_ID || 'introspector';
const introspectorSecret = process.env.OP_API_INTROSPECTOR_SECRET || 'introspector-secret';
const apiTokenTtl = Number(process.env.OP_API_TOKEN_TTL || 600);
const postLogoutRedirectUris = (process.env.OP_POST_LOGOUT_REDIRECT_URIS || '').split(/[\s,]+/).filter(Boolean);
const backchannelLogoutUri = process.env.OP_BACKCHANNEL_LOGOUT_URI || '';
const frontchannelLogoutUri = process.env.OP_FRONTCHANNEL_LOGOUT_URI || '';
const testEndpoints = process.env.OP_TEST_ENDPOINTS === '1';
const refreshEnabled = process.env.OP_REFRESH === '1';
// unset: the lifetimes as before (refresh 86400 s, ID/access token 3600 s)
function ttlFromEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n <= 0) fail(`bad ${name} ${raw}`);
  return n;
}
const refreshTtl = ttlFromEnv('OP_REFRESH_TTL', refreshEnabled ? 3600 : 86400);
const idTokenTtl = ttlFromEnv('OP_ID_TOKEN_TTL', 3600);
const logoutOptIn = postLogoutRedirectUris.length > 0 || !!backchannelLogoutUri || !!frontchannelLogoutUri;
for (const [name, uri] of [['OP_BACKCHANNEL_LOGOUT_URI', backchannelLogoutUri],
  ['OP_FRONTCHANNEL_LOGOUT_URI', frontchannelLogoutUri],
  ...postLogoutRedirectUris.map((u) => ['OP_POST_LOGOUT_REDIRECT_URIS', u])]) {
  if (uri && !['http:', 'https:'].includes(URL.parse(uri)?.protocol)) fail(`bad ${name} ${uri}`);
}
if (apiEnabled) {
  if (!Number.isSafeInteger(apiTokenTtl) || apiTokenTtl <= 0) fail(`bad OP_API_TOKEN_TTL ${process.env.OP_API_TOKEN_TTL}`);
  if (new Set([clientId, apiClientId, introspectorId]).size !== 3) {
    fail('OP_CLIENT_ID, OP_API_CLIENT_ID and OP_API_INTROSPECTOR_ID must differ');
  }
}

// ---- exit when the parent goes away ---------------------------------------
let stopping = false;
function stop(why) {
  if (stopping) return;
  stopping = true;
  console.error(`provider.mjs: ${why}, exiting`);
  // keep-alive connections would hold server.close() open: drop them
  server.closeAllConnections?.();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.stdin.on('end', () => stop('stdin closed'));
process.stdin.on('close', () => stop('stdin closed'));
process.stdin.on('error', () => stop('stdin error'));
process.stdin.resume();
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => stop(sig));

// ---- test users -------------------------------------------------------------
// devInteractions (the built-in login page) accepts any login; the
// middleware below checks the password against this table first.
const USERS = {
  alice: {
    password: 'alice-pw',
    claims: {
      email: 'alice@example.test', email_verified: true, name: 'Alice Admin',
      preferred_username: 'alice', role: 'admin', groups: ['admins', 'devs'],
    },
  },
  bob: {
    password: 'bob-pw',
    claims: {
      email: 'bob@example.test', email_verified: true, name: 'Bob Builder',
      preferred_username: 'bob', role: 'developer', groups: ['devs'],
    },
  },
  carol: {
    password: 'carol-pw',
    claims: {
      email: 'carol@example.test', email_verified: false, name: 'Carol Viewer',
      preferred_username: 'carol', role: 'viewer', groups: [],
    },
  },
  dave: {
    password: 'dave-pw',
    claims: {
      email: 'dave@other.test', email_verified: true, name: 'Dave Root',
      preferred_username: 'dave', role: 'superuser', groups: ['ops'],
    },
  },
};

async function findAccount(ctx, id) {
  const user = USERS[id];
  if (!user) return undefined;
  return {
    accountId: id,
    // oidc-provider filters these by the granted scopes/claims
    async claims() { return { sub: id, ...user.claims }; },
  };
}

// ---- signing key: fresh per process, so tests never share key state -------
function freshJwks() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256' };
  jwk.kid = crypto.createHash('sha256').update(jwk.n).digest('base64url').slice(0, 16);
  const keys = [jwk];
  if (apiEnabled) {
    // For the JWT access tokens only (see API_RESOURCES); listed after the
    // RSA key, and every client here pins RS256 for its ID tokens.
    const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const ecJwk = { ...ec.export({ format: 'jwk' }), use: 'sig', alg: 'ES256' };
    ecJwk.kid = crypto.createHash('sha256').update(ecJwk.x + ecJwk.y).digest('base64url').slice(0, 16);
    keys.push(ecJwk);
  }
  return { keys };
}

// ---- opt-in API support (OP_API=1) -----------------------------------------
const API_SCOPE = 'api:read';
const API_RESOURCES = {
  'https://api.sidegate.test': {
    scope: API_SCOPE,
    audience: 'https://api.sidegate.test',
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'ES256' } },
  },
  'https://opaque.sidegate.test': {
    scope: API_SCOPE,
    audience: 'https://opaque.sidegate.test',
    accessTokenFormat: 'opaque',
  },
};

// Only the API client may name a resource: for every other client this
// answers like oidc-provider's default (invalid_target), so the login
// client's tokens stay opaque, audience-less and usable at userinfo.
async function getResourceServerInfo(ctx, resourceIndicator, client) {
  // accept the URL with or without the trailing slash URL parsing adds
  const info = API_RESOURCES[resourceIndicator.replace(/\/$/, '')];
  if (!info || client.clientId !== apiClientId) throw new errors.InvalidTarget();
  return info;
}

// Identity claims for the API client's client-credentials tokens, so a
// resource server's identity mapping finds a "user". oidc-provider puts these
// into the JWT access token's payload and into the introspection response
// of an opaque token; other tokens get none.
async function extraTokenClaims(ctx, token) {
  if (token.kind !== 'ClientCredentials' || token.clientId !== apiClientId) return undefined;
  // sub too: the JWT has sub = client id anyway, the introspection response
  // of a token without an end-user would otherwise have no sub at all
  return {
    sub: apiClientId, preferred_username: apiClientId, role: 'developer', groups: ['api-clients'],
  };
}

// Confidential clients (the introspector, the API client, the login client)
// may introspect any token; a public client only its own (the library's
// default rule, written out here).
async function introspectionAllowedPolicy(ctx, client, token) {
  if (client.clientAuthMethod === 'none') return token.clientId === client.clientId;
  return true;
}

const apiClients = [{
  client_id: apiClientId,
  client_secret: apiClientSecret,
  redirect_uris: [],
  response_types: [],
  grant_types: ['client_credentials'],
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: 'RS256',
}, {
  client_id: introspectorId,
  client_secret: introspectorSecret,
  redirect_uris: [],
  response_types: [],
  grant_types: [],
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: 'RS256',
}];

// ---- opt-in logout support (OP_POST_LOGOUT_REDIRECT_URIS, OP_*_LOGOUT_URI) --
function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

// The logout confirmation page (end_session with an OP session). The
// library's default page has one form holding only the xsrf input, and its
// two buttons sit outside it (form="op.logoutForm"), so a simple client that
// submits the first form's inputs would send "no". Here the first form is
// "yes" (logout=yes as a hidden input), the second "no". Both post the xsrf
// secret the library just put into the session to its own confirm route.
async function logoutSource(ctx) {
  const action = esc(ctx.oidc.urlFor('end_session_confirm'));
  const xsrf = `<input type="hidden" name="xsrf" value="${esc(ctx.oidc.session.state.secret)}"/>`;
  ctx.body = `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>Sign out</title></head>
<body>
<h1>Do you want to sign out from ${esc(ctx.host)}?</h1>
<form id="op.logoutForm" method="post" action="${action}">
  ${xsrf}
  <input type="hidden" name="logout" value="yes"/>
  <button autofocus type="submit">Yes, sign me out</button>
</form>
<form id="op.stayForm" method="post" action="${action}">
  ${xsrf}
  <button type="submit">No, stay signed in</button>
</form>
</body>
</html>`;
}

// Back-channel logout POSTs go through oidc-provider's fetch helper, which
// hands `configuration.fetch` an undici dispatcher that drops connections to
// special-use addresses (loopback included: SSRF protection). Our RPs listen
// on loopback, so for loopback targets that dispatcher is left out.
const LOOPBACK_HOSTS = new Set(['localhost', '[::1]']);
function loopbackFetch(url, options) {
  const host = new URL(url).hostname;
  if (LOOPBACK_HOSTS.has(host) || /^127\.\d+\.\d+\.\d+$/.test(host)) {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  }
  return globalThis.fetch(url, options);
}

// Front-channel logout, which oidc-provider 9 does not implement (its
// features.frontchannelLogout is an "Unknown feature configuration"): the
// client's frontchannel_logout_uri is extra client metadata, and a middleware
// around the confirm route (installed below) turns its 303 into this page
// when the ending session had logged in to a client with such a URI. Which
// clients: the same rule the library applies to back-channel logout (all of
// the session's clients on "yes", only the requesting client on "no").
// The first form continues to where the 303 pointed: a GET whose action
// keeps the target's query for clients that send a GET form's action as is,
// and repeats it as hidden inputs for browsers (which replace the query).
function frontchannelPage(target, frames) {
  const u = new URL(target);
  const inputs = [...u.searchParams].map(([k, v]) => `<input type="hidden" name="${esc(k)}" value="${esc(v)}"/>`);
  const iframes = frames.map(({ clientId: id, src }) => `<iframe class="op-frontchannel-logout" data-client-id="${esc(id)}"`
    + ` src="${esc(src)}" width="0" height="0" style="display:none"></iframe>`);
  return `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>Signing out</title></head>
<body>
<h1>Signing out</h1>
<form id="op.continue" method="get" action="${esc(target)}">
  ${inputs.join('\n  ')}
  <button type="submit">Continue</button>
</form>
${iframes.join('\n')}
<script>
(function () {
  var frames = document.querySelectorAll('iframe.op-frontchannel-logout');
  var left = frames.length, done = false;
  function go() { if (!done) { done = true; document.getElementById('op.continue').submit(); } }
  frames.forEach(function (f) { f.addEventListener('load', function () { if (--left <= 0) go(); }); });
  setTimeout(go, 2500);
})();
</script>
</body>
</html>`;
}

function frontchannelSrc(client, issuer, sid) {
  const u = new URL(client.frontchannel_logout_uri);
  if (client.frontchannel_logout_session_required) {
    u.searchParams.set('iss', issuer);
    if (sid) u.searchParams.set('sid', sid);
  }
  return u.href;
}

const loginClient = {
  client_id: clientId,
  client_secret: clientSecret,
  redirect_uris: redirectUris,
  post_logout_redirect_uris: postLogoutRedirectUris.length > 0
    ? postLogoutRedirectUris
    : [...new Set(redirectUris.map((u) => new URL('/', u).href))],
  response_types: ['code'],
  grant_types: ['authorization_code', 'refresh_token'],
  token_endpoint_auth_method: clientAuth,
  id_token_signed_response_alg: 'RS256',
};
if (backchannelLogoutUri) {
  // backchannel_logout_uri only needs to be a web (http or https) URI, for
  // `web` clients too (only redirect_uris of implicit web clients must be https)
  loginClient.backchannel_logout_uri = backchannelLogoutUri;
  loginClient.backchannel_logout_session_required = true;
}
if (frontchannelLogoutUri) {
  loginClient.frontchannel_logout_uri = frontchannelLogoutUri;
  loginClient.frontchannel_logout_session_required = true;
}

const configuration = {
  clients: [loginClient, ...(apiEnabled ? apiClients : [])],
  findAccount,
  jwks: freshJwks(),
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    // custom scope carrying the authorization claims
    roles: ['role', 'groups'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'roles'],
  // put the scope claims into the ID token too (sidegate reads them there)
  conformIdTokenClaims: false,
  pkce: { required: (ctx, client) => pkceRequiredForAll || client.clientAuthMethod === 'none' },
  features: {
    devInteractions: { enabled: true }, // GET/POST /interaction/:uid
    rpInitiatedLogout: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
  },
  ttl: {
    AccessToken: idTokenTtl, AuthorizationCode: 60, IdToken: idTokenTtl,
    Interaction: 600, Session: 86400, Grant: 86400, RefreshToken: refreshTtl,
  },
};
if (refreshEnabled) {
  // The login client gets a refresh token from every authorization code
  // (the library's default wants scope offline_access); any other client
  // keeps that default rule (none of them may use refresh_token anyway).
  configuration.issueRefreshToken = async (ctx, client, source) => client.grantTypeAllowed('refresh_token')
    && (client.clientId === clientId || source.scopes.has('offline_access'));
  // Single use: every refresh consumes the presented token and answers a new
  // one. Presenting a consumed one again is invalid_grant, and the library
  // then treats it as theft: it revokes the whole grant (see the header).
  configuration.rotateRefreshToken = true;
}
if (apiEnabled) {
  Object.assign(configuration.features, {
    clientCredentials: { enabled: true },
    introspection: { enabled: true, allowedPolicy: introspectionAllowedPolicy },
    // oidc-provider enables resourceIndicators by default; only the resource
    // servers are added. defaultResource and useGrantedResource keep their
    // defaults (no resource unless one is requested), as before.
    resourceIndicators: { enabled: true, getResourceServerInfo },
  });
  configuration.extraTokenClaims = extraTokenClaims;
  configuration.ttl.ClientCredentials = apiTokenTtl;
}
if (logoutOptIn) {
  configuration.features.rpInitiatedLogout = { enabled: true, logoutSource };
}
if (backchannelLogoutUri) {
  configuration.features.backchannelLogout = { enabled: true };
  configuration.fetch = loopbackFetch;
}
if (frontchannelLogoutUri) {
  configuration.extraClientMetadata = {
    properties: ['frontchannel_logout_uri', 'frontchannel_logout_session_required'],
    validator(ctx, key, value) {
      if (value === undefined) return;
      if (key === 'frontchannel_logout_uri'
          && !['http:', 'https:'].includes(URL.parse(value)?.protocol)) {
        throw new errors.InvalidClientMetadata('frontchannel_logout_uri must be a web uri');
      }
      if (key === 'frontchannel_logout_session_required' && typeof value !== 'boolean') {
        throw new errors.InvalidClientMetadata('frontchannel_logout_session_required must be a boolean');
      }
    },
  };
  configuration.discovery = {
    frontchannel_logout_supported: true,
    frontchannel_logout_session_supported: true,
  };
}

// ---- listen first: the issuer must carry the real (maybe ephemeral) port ---
const server = http.createServer();
server.on('error', (err) => fail(`listen on 127.0.0.1:${port} failed: ${err.message}`));
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration);

  if (accessLog) {
    provider.use(async (ctx, next) => {
      const t = Date.now();
      await next();
      console.error(`${ctx.method} ${ctx.url} -> ${ctx.status} ${Date.now() - t}ms`);
    });
  }

  if (frontchannelLogoutUri) {
    // ID tokens carry `sid` for clients that need it for back-channel logout
    // (the library's rule); front-channel logout with sessions needs it too.
    const { includeSid } = provider.Client.prototype;
    provider.Client.prototype.includeSid = function includeSidForFrontchannel() {
      return includeSid.call(this)
        || !!(this.frontchannel_logout_uri && this.frontchannel_logout_session_required);
    };

    // Around the library's logout confirmation: read the session before it
    // ends, and replace a successful 303 by the iframe page when needed.
    const confirmPath = provider.pathFor('end_session_confirm');
    provider.use(async (ctx, next) => {
      if (ctx.method !== 'POST' || ctx.path !== confirmPath) return next();
      const before = await provider.Session.get(ctx);
      const authorizations = { ...before.authorizations };
      const requester = before.state?.clientId;
      await next();
      const target = ctx.response.get('location');
      if (ctx.status !== 303 || !target) return undefined;
      const everyone = !!ctx.oidc.params.logout;
      const frames = [];
      for (const [id, { sid } = {}] of Object.entries(authorizations)) {
        if (!everyone && id !== requester) continue;
        const client = await provider.Client.find(id).catch(() => undefined);
        if (client?.frontchannel_logout_uri) {
          frames.push({ clientId: id, src: frontchannelSrc(client, provider.issuer, sid) });
        }
      }
      if (frames.length === 0) return undefined;
      ctx.remove('location');
      ctx.status = 200;
      ctx.type = 'html';
      ctx.body = frontchannelPage(target, frames);
      return undefined;
    });
  }

  if (testEndpoints) {
    // Which sessions belong to whom: the memory adapter cannot be searched,
    // so remember every saved session's id (stale ids just fail to load).
    const sessionIds = new Map();
    provider.on('session.saved', (session) => {
      if (!session.accountId) return;
      if (!sessionIds.has(session.accountId)) sessionIds.set(session.accountId, new Set());
      sessionIds.get(session.accountId).add(session.jti);
    });

    // What a confirmed "yes" logout does (the library's end_session confirm
    // action), for every session of one account: the library's own
    // Client#backchannelLogout, grant revocation, Session#destroy.
    provider.use(async (ctx, next) => {
      if (ctx.path !== '/test/end-sessions') return next();
      if (ctx.method !== 'POST') ctx.throw(405);
      const sub = ctx.query.sub;
      if (typeof sub !== 'string' || !sub) ctx.throw(400, 'sub query parameter required');
      const result = { sub, sessions: 0, backchannel: [] };
      for (const id of sessionIds.get(sub) || []) {
        sessionIds.get(sub).delete(id);
        const session = await provider.Session.find(id);
        if (!session || session.accountId !== sub) continue;
        result.sessions += 1;
        for (const [cid, auth] of Object.entries(session.authorizations || {})) {
          const client = await provider.Client.find(cid).catch(() => undefined);
          if (client?.backchannelLogoutUri) {
            try {
              await client.backchannelLogout(sub, auth.sid);
              result.backchannel.push({ client_id: cid, sid: auth.sid, ok: true });
            } catch (err) {
              console.error(`provider.mjs: back-channel logout to ${cid} failed:`, err);
              result.backchannel.push({ client_id: cid, sid: auth.sid, ok: false, error: String(err.message) });
            }
          }
          if (auth.grantId && !auth.persistsLogout) {
            await Promise.all([provider.AccessToken, provider.RefreshToken, provider.AuthorizationCode]
              .map((model) => model.revokeByGrantId(auth.grantId)));
            await provider.Grant.adapter.destroy(auth.grantId);
          }
        }
        await session.destroy();
      }
      ctx.type = 'json';
      ctx.body = result;
      return undefined;
    });
  }

  if (testEndpoints) {
    // Token endpoint outcomes of the refresh_token grant (the library emits
    // grant.success after a handler answered, grant.error with the error).
    const stats = { refresh_grants: 0, refresh_invalid_grant: 0 };
    provider.on('grant.success', (ctx) => {
      if (ctx.oidc?.params?.grant_type === 'refresh_token') stats.refresh_grants += 1;
    });
    provider.on('grant.error', (ctx, err) => {
      if (ctx.oidc?.params?.grant_type !== 'refresh_token') return;
      console.error(`provider.mjs: refresh_token grant failed: ${err.error} (${err.error_detail || err.error_description})`);
      if (err.error === 'invalid_grant') stats.refresh_invalid_grant += 1;
    });

    provider.use(async (ctx, next) => {
      if (ctx.path === '/test/stats') {
        if (ctx.method !== 'GET') ctx.throw(405);
        ctx.type = 'json';
        ctx.body = { ...stats };
        return undefined;
      }
      if (ctx.path !== '/test/claims') return next();
      if (ctx.method !== 'POST') ctx.throw(405);
      const { sub } = ctx.query;
      if (typeof sub !== 'string' || !Object.hasOwn(USERS, sub)) ctx.throw(404, 'unknown sub');
      const user = USERS[sub];
      const chunks = [];
      let size = 0;
      for await (const c of ctx.req) {
        size += c.length;
        if (size > 16384) ctx.throw(413, 'body too large');
        chunks.push(c);
      }
      let patch;
      try {
        patch = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        ctx.throw(400, 'body must be JSON');
      }
      if (!patch || typeof patch !== 'object' || Array.isArray(patch)) ctx.throw(400, 'body must be a JSON object');
      if (Object.hasOwn(patch, 'sub')) ctx.throw(400, 'sub cannot be changed');
      if (Object.hasOwn(patch, '__proto__')) ctx.throw(400, 'bad claim name');
      for (const [k, v] of Object.entries(patch)) {
        if (v === null) delete user.claims[k];
        else user.claims[k] = v;
      }
      ctx.type = 'json';
      ctx.body = { sub, claims: user.claims };
      return undefined;
    });
  }

  // Password check in front of devInteractions' login submit (which would
  // otherwise accept any login). Unknown user or wrong password -> 401 page.
  provider.use(async (ctx, next) => {
    if (ctx.method === 'POST' && /^\/interaction\/[^/]+$/.test(ctx.path)
        && ctx.is('application/x-www-form-urlencoded')) {
      const chunks = [];
      let size = 0;
      for await (const c of ctx.req) {
        size += c.length;
        if (size > 16384) ctx.throw(413, 'form too large');
        chunks.push(c);
      }
      const raw = Buffer.concat(chunks).toString('utf8');
      const form = querystring.parse(raw);
      if (form.prompt === 'login') {
        const user = USERS[form.login];
        if (!user || user.password !== form.password) {
          ctx.status = 401;
          ctx.type = 'html';
          ctx.body = '<!DOCTYPE html><title>Sign-in failed</title>'
            + '<p class="error" id="login-error">invalid login or password</p>';
          return;
        }
      }
      // hand the already-read body to oidc-provider's own parser
      ctx.req.body = raw;
    }
    await next();
  });

  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  if (backchannelLogoutUri) {
    // the library finishes the logout anyway; make a failed POST visible
    provider.on('backchannel.error', (ctx, err, client, accountId, sid) => {
      console.error(`provider.mjs: back-channel logout to ${client.clientId} (sub ${accountId}, sid ${sid}) failed:`, err);
    });
  }

  server.on('request', provider.callback());
  const ready = { issuer };
  if (apiEnabled) {
    ready.api = {
      client_id: apiClientId,
      client_secret: apiClientSecret,
      introspector_id: introspectorId,
      introspector_secret: introspectorSecret,
      scope: API_SCOPE,
      resources: { jwt: 'https://api.sidegate.test', opaque: 'https://opaque.sidegate.test' },
    };
  }
  process.stdout.write(`READY ${JSON.stringify(ready)}\n`);
});
