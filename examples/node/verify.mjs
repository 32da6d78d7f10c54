// Verifying sidegate's identity assertion in a plain node:http app, with jose.
//
// sidegate adds `X-Sidegate-Assertion` to every request it lets through: a short-lived JWT
// signed with sidegate's key, published at `<public_url>/.sidegate/jwks.json`.
//
//   import { createSidegateVerifier, withSidegate } from './verify.mjs';
//   const verifySidegate = createSidegateVerifier({ publicUrl: 'https://app.example.com' });
//   http.createServer(withSidegate(verifySidegate, (req, res) => {
//     res.end(`hello ${req.sidegate.user}`);  // the verified identity
//   }));
//
// Run the tiny server (sidegate's upstream):
//   SIDEGATE_PUBLIC_URL=http://127.0.0.1:4180 PORT=3000 node verify.mjs
// Check one token (used by sidegate's tests; prints one JSON line, exit 0 either way, 2 on
// a usage error):
//   node verify.mjs --check --jwks-url URL --issuer ISS --audience AUD [--assertion TOKEN]
import http from 'node:http';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';

export const ASSERTION_HEADER = 'x-sidegate-assertion';
// With `[assertion] compat_headers` sidegate sends the same token under these names too.
export const POMERIUM_HEADER = 'x-pomerium-jwt-assertion';
export const IAP_HEADER = 'x-goog-iap-jwt-assertion';
// What sidegate signs with: a fixed list, never taken from the token.
export const ALGORITHMS = ['ES256', 'EdDSA'];

/** A refused assertion; `reason` is a stable code (the same ones as examples/python). */
export class SidegateAuthError extends Error {
  constructor(reason, detail) {
    super(`${reason}: ${detail}`);
    this.name = 'SidegateAuthError';
    this.reason = reason;
    this.detail = detail;
  }
}

/** sidegate's `iss`: the public URL's origin (scheme, host, non-default port). */
export function publicOrigin(url) {
  const u = new URL(url);
  const web = u.protocol === 'http:' || u.protocol === 'https:';
  if (!web || (u.pathname !== '/' && u.pathname !== '') || u.search || u.hash) {
    throw new TypeError(`sidegate's public URL is an http(s) origin without a path: ${url}`);
  }
  return u.origin;
}

/**
 * Returns `verifySidegate(req)`: resolves to the identity `{user, email, role, teams, sub, idp}`
 * or rejects with a SidegateAuthError. Create it once: it holds the JWKS cache.
 *
 * Options: `publicUrl` (sets the JWKS URL, issuer and default audience), or `jwksUrl`,
 * `issuer` and `audience` one by one; `clockTolerance` seconds (30); `headerNames`
 * (lower case, default `[ASSERTION_HEADER]`).
 */
export function createSidegateVerifier(options) {
  const origin = options.publicUrl ? publicOrigin(options.publicUrl) : undefined;
  const jwksUrl = options.jwksUrl ?? (origin && `${origin}/.sidegate/jwks.json`);
  const issuer = options.issuer ?? origin;
  const audience = options.audience ?? origin;
  if (!jwksUrl || !issuer || !audience) {
    throw new TypeError('createSidegateVerifier needs publicUrl, or jwksUrl, issuer and audience');
  }
  const headerNames = (options.headerNames ?? [ASSERTION_HEADER]).map((h) => h.toLowerCase());
  const clockTolerance = options.clockTolerance ?? 30;
  // jose caches the keys (cacheMaxAge) and refetches on an unknown kid at most once per
  // cooldownDuration, so made-up kids cannot turn every request into a JWKS fetch.
  const keys = createRemoteJWKSet(new URL(jwksUrl), {
    timeoutDuration: 5000,
    cooldownDuration: 30_000,
    cacheMaxAge: 300_000,
  });

  return async function verifySidegate(req) {
    const token = assertionOf(req.headers ?? {}, headerNames);
    let header;
    try {
      header = decodeProtectedHeader(token);
    } catch (err) {
      throw new SidegateAuthError('malformed', err.message);
    }
    // Refuse a wrong alg before any key lookup: `none` and HS* never get near a key.
    if (!ALGORITHMS.includes(header.alg)) {
      const alg = JSON.stringify(header.alg);
      throw new SidegateAuthError('bad_algorithm', `alg ${alg} is not one of ${ALGORITHMS}`);
    }
    if (typeof header.kid !== 'string' || !header.kid) {
      throw new SidegateAuthError('unknown_key', 'the header names no kid');
    }
    let payload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        algorithms: ALGORITHMS,
        issuer,
        audience,
        clockTolerance,
        requiredClaims: ['exp', 'iat', 'sub'],
        // Makes iat required and refuses one in the future; sidegate's lifetime is at most 1 h.
        maxTokenAge: 3600,
      }));
    } catch (err) {
      throw refusal(err);
    }
    return identityOf(payload);
  };
}

/** The one assertion in `headers` (node's lower-case header object). */
function assertionOf(headers, names) {
  const values = [];
  for (const name of names) {
    const v = headers[name];
    for (const one of Array.isArray(v) ? v : v === undefined ? [] : [v]) {
      if (String(one).trim()) values.push(String(one).trim());
    }
  }
  if (values.length === 0) {
    throw new SidegateAuthError('missing', `no ${names.join(' or ')} header`);
  }
  // node joins repeated unknown headers with ", " (never part of a JWS): malformed too.
  if (new Set(values).size > 1) {
    throw new SidegateAuthError('malformed', 'more than one different assertion');
  }
  return values[0];
}

function refusal(err) {
  switch (err?.code) {
    case 'ERR_JWT_EXPIRED':
      return new SidegateAuthError('expired', err.message);
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED': {
      const failed = { aud: 'wrong_audience', iss: 'wrong_issuer', iat: 'not_yet_valid' };
      const reason = err.reason === 'check_failed' && Object.hasOwn(failed, err.claim)
        && failed[err.claim];
      return new SidegateAuthError(reason || 'bad_claims', err.message);
    }
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return new SidegateAuthError('bad_algorithm', err.message);
    case 'ERR_JWKS_NO_MATCHING_KEY':
      return new SidegateAuthError('unknown_key', err.message);
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return new SidegateAuthError('bad_signature', err.message);
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      return new SidegateAuthError('malformed', err.message);
    case 'ERR_JWKS_TIMEOUT':
    case 'ERR_JWKS_INVALID':
    case 'ERR_JOSE_GENERIC': // jose's "Expected 200 OK from the JSON Web Key Set HTTP response"
      return new SidegateAuthError('jwks_unavailable', err.message);
    default:
      // No JOSE code: the JWKS fetch itself failed (fetch's TypeError).
      if (!err?.code) {
        return new SidegateAuthError('jwks_unavailable', String(err?.message ?? err));
      }
      return new SidegateAuthError('invalid', `${err.code}: ${err.message}`);
  }
}

function identityOf(p) {
  const text = (name) => {
    if (typeof p[name] !== 'string' || !p[name]) {
      throw new SidegateAuthError('bad_claims', `claim "${name}" must be a non-empty string`);
    }
    return p[name];
  };
  if (!Array.isArray(p.teams) || !p.teams.every((t) => typeof t === 'string')) {
    throw new SidegateAuthError('bad_claims', 'claim "teams" must be an array of strings');
  }
  if (p.email !== undefined && p.email !== null && typeof p.email !== 'string') {
    throw new SidegateAuthError('bad_claims', 'claim "email" must be a string');
  }
  if (typeof p.idp !== 'string') {
    throw new SidegateAuthError('bad_claims', 'claim "idp" must be a string');
  }
  return {
    user: text('user'),
    email: p.email ?? null,
    role: text('role'),
    teams: [...p.teams],
    sub: text('sub'),
    idp: p.idp,
  };
}

/**
 * Middleware-style wrapper for a node:http handler: on success `req.sidegate` is the
 * identity and `handler` runs; otherwise 401 (503 if sidegate's keys cannot be fetched)
 * with the reason code; what exactly failed goes to the log only.
 */
export function withSidegate(verifySidegate, handler) {
  return async (req, res) => {
    try {
      req.sidegate = await verifySidegate(req);
    } catch (err) {
      if (!(err instanceof SidegateAuthError)) throw err;
      console.error(`refused ${req.method} ${req.url}: ${err.reason}: ${err.detail}`);
      const status = err.reason === 'jwks_unavailable' ? 503 : 401;
      const headers = { 'content-type': 'application/json' };
      if (status === 401) headers['www-authenticate'] = 'Sidegate realm="app"';
      res.writeHead(status, headers).end(JSON.stringify({ reason: err.reason }));
      return;
    }
    return handler(req, res);
  };
}

function finish(obj, code) {
  // exit only once stdout is flushed (it may be a pipe)
  process.stdout.write(`${JSON.stringify(obj)}\n`, () => process.exit(code));
}

async function check(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        check: { type: 'boolean' },
        'jwks-url': { type: 'string' },
        issuer: { type: 'string' },
        audience: { type: 'string' },
        assertion: { type: 'string' },
        header: { type: 'string', default: ASSERTION_HEADER },
      },
    }));
    if (!values['jwks-url'] || !values.issuer || !values.audience) {
      throw new Error('--jwks-url, --issuer and --audience are required');
    }
  } catch (err) {
    process.stderr.write(`${err.message}\nusage: node verify.mjs --check --jwks-url URL `
      + '--issuer ISS --audience AUD [--assertion TOKEN] [--header NAME]\n');
    process.exit(2);
  }
  const header = values.header.toLowerCase();
  const verifySidegate = createSidegateVerifier({
    jwksUrl: values['jwks-url'],
    issuer: values.issuer,
    audience: values.audience,
    headerNames: [header],
  });
  const req = { headers: values.assertion === undefined ? {} : { [header]: values.assertion } };
  try {
    finish({ ok: true, identity: await verifySidegate(req) }, 0);
  } catch (err) {
    if (!(err instanceof SidegateAuthError)) throw err;
    finish({ ok: false, error: err.reason, detail: err.detail }, 0);
  }
}

function serve() {
  const publicUrl = process.env.SIDEGATE_PUBLIC_URL;
  if (!publicUrl) {
    process.stderr.write("set SIDEGATE_PUBLIC_URL to sidegate's public URL, e.g. "
      + 'http://127.0.0.1:4180\n');
    process.exit(2);
  }
  const verifySidegate = createSidegateVerifier({
    publicUrl,
    audience: process.env.SIDEGATE_AUDIENCE || undefined,
    jwksUrl: process.env.SIDEGATE_JWKS_URL || undefined,
  });
  const app = withSidegate(verifySidegate, (req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(req.sidegate));
  });
  const port = Number(process.env.PORT ?? 3000);
  const host = process.env.HOST ?? '127.0.0.1';
  http
    .createServer((req, res) => {
      app(req, res).catch((err) => {
        console.error(err);
        if (!res.headersSent) res.writeHead(500).end();
      });
    })
    .listen(port, host, () => {
      console.log(`listening on http://${host}:${port}, trusting ${publicOrigin(publicUrl)}`);
    });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (process.argv.includes('--check')) await check(process.argv.slice(2));
  else serve();
}
