// Test OpenID Provider for sidegate's integration tests and benchmark, built
// on the npm package `oidc-provider` (pinned in package-lock.json). Loopback
// only, in-memory state, fresh signing keys at every start.
//
// Protocol with the caller (a Rust test or bench/bench.sh):
//   stdout: exactly one line, `READY {"issuer":"http://127.0.0.1:<port>"}`,
//           once the port is listening; nothing else is ever written there.
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
// Users (password `<name>-pw`): alice (admin), bob (developer),
// carol (viewer, email not verified), dave (superuser: a role outside a
// typical allow-list).
import crypto from 'node:crypto';
import http from 'node:http';
import querystring from 'node:querystring';

import Provider from 'oidc-provider';

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
  return { keys: [jwk] };
}

const configuration = {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    post_logout_redirect_uris: [...new Set(redirectUris.map((u) => new URL('/', u).href))],
    response_types: ['code'],
    grant_types: ['authorization_code', 'refresh_token'],
    token_endpoint_auth_method: clientAuth,
    id_token_signed_response_alg: 'RS256',
  }],
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
    AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600,
    Interaction: 600, Session: 86400, Grant: 86400, RefreshToken: 86400,
  },
};

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

  server.on('request', provider.callback());
  process.stdout.write(`READY ${JSON.stringify({ issuer })}\n`);
});
