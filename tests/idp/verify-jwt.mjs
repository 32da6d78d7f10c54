// Independent check of the identity assertions sidegate signs: a second,
// unrelated JOSE implementation (jose) must accept them.
//
//   node tests/idp/verify-jwt.mjs <jwks_url> <token> <expected_issuer> <expected_audience>
//
// Prints one JSON line to stdout:
//   {"ok":true,"header":{...},"payload":{...}}   exit 0
//   {"ok":false,"error":"..."}                   exit 1
// Only ES256 and EdDSA are accepted (what sidegate signs with); the issuer,
// audience, exp and nbf are checked.
import { createRemoteJWKSet, jwtVerify } from 'jose';

function finish(obj, code) {
  // exit only once stdout is flushed (it may be a pipe)
  process.stdout.write(`${JSON.stringify(obj)}\n`, () => process.exit(code));
}

const [jwksUrl, token, issuer, audience] = process.argv.slice(2);
if (process.argv.length !== 6 || !jwksUrl || !token || !issuer || !audience) {
  finish({
    ok: false,
    error: 'usage: verify-jwt.mjs <jwks_url> <token> <expected_issuer> <expected_audience>',
  }, 1);
} else {
  try {
    const jwks = createRemoteJWKSet(new URL(jwksUrl), { timeoutDuration: 5000 });
    const { payload, protectedHeader } = await jwtVerify(token, jwks, {
      algorithms: ['ES256', 'EdDSA'],
      issuer,
      audience,
    });
    finish({ ok: true, header: protectedHeader, payload }, 0);
  } catch (err) {
    const code = err && err.code ? `${err.code}: ` : '';
    finish({ ok: false, error: `${code}${err && err.message ? err.message : String(err)}` }, 1);
  }
}
