// Verifies a JWT the way an application would, with an implementation independent of
// Portcullis (panva/jose): keys from the JWKS URL alone, issuer, audience and `typ` checked.
//
//   node verify-jwt.mjs <jwks url> <issuer> <audience> <typ> <token>
//
// Prints {"ok":true,"header":…,"payload":…} or {"ok":false,"error":…}; exits 1 when refused.
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [jwksUrl, issuer, audience, typ, token] = process.argv.slice(2);
try {
  const jwks = createRemoteJWKSet(new URL(jwksUrl));
  const { payload, protectedHeader } = await jwtVerify(token, jwks, {
    issuer,
    audience,
    typ,
    algorithms: ['ES256', 'EdDSA', 'RS256'],
  });
  console.log(JSON.stringify({ ok: true, header: protectedHeader, payload }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: e.code || String(e) }));
  process.exitCode = 1;
}
