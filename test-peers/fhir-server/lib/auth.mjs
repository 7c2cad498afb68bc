// OAuth2 for the test server: a client-credentials token endpoint and the bearer check.
//
// Client authentication at `POST /oauth2/token` (grant_type=client_credentials only):
//   * client_secret_post: `client_id` + `client_secret` in the form body;
//   * client_secret_basic: HTTP Basic with the form-urlencoded id and secret (RFC 6749 §2.3.1);
//   * private_key_jwt (SMART backend services): `client_assertion_type=
//     urn:ietf:params:oauth:client-assertion-type:jwt-bearer` + `client_assertion`, an RS384 or
//     ES384 JWT signed with the client's key, iss = sub = client id, aud = the token URL, exp in
//     the future (at most 5 minutes ahead, as SMART requires), and a jti never seen before.
// Wrong credentials get 401 `{"error":"invalid_client"}` (RFC 6749 §5.2), which is what lets
// tests see a client give up instead of looping. Issued tokens are opaque random strings that
// expire after `tokenTtl` seconds; a configured static token never expires.
// Only node:crypto is used.

import { createHash, createPublicKey, randomBytes, timingSafeEqual, verify } from 'node:crypto';

/** The client_assertion_type of private_key_jwt. */
export const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** How far in the future a client assertion's exp may be (SMART: five minutes), plus skew. */
const MAX_ASSERTION_LIFETIME_S = 300;
const CLOCK_SKEW_S = 5;

/** An authentication failure with the OAuth2 error code and a description for the client. */
export class OAuthError extends Error {
  /**
   * @param {number} status
   * @param {string} error
   * @param {string} description
   */
  constructor(status, error, description) {
    super(description);
    this.status = status;
    this.error = error;
  }
}

/**
 * Reads public keys from the text of a key file: PEM (public key, certificate or private key),
 * a JWK, or a JWK Set (`{"keys": [...]}`).
 * @param {string} text
 * @returns {Array<{ key: import('node:crypto').KeyObject, kid: string | undefined }>}
 */
export function loadPublicKeys(text) {
  const trimmed = text.trim();
  if (trimmed.startsWith('{')) {
    const json = JSON.parse(trimmed);
    const jwks = Array.isArray(json.keys) ? json.keys : [json];
    return jwks.map((jwk) => ({ key: createPublicKey({ key: jwk, format: 'jwk' }), kid: jwk.kid }));
  }
  return [{ key: createPublicKey(trimmed), kid: undefined }];
}

/**
 * Parses an HTTP Basic Authorization header into a client id and secret.
 * @param {string | undefined} header
 * @returns {{ id: string, secret: string } | null} null when the header is not Basic
 */
export function parseBasicAuth(header) {
  if (!header || !/^basic /i.test(header)) {
    return null;
  }
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) {
    throw new OAuthError(401, 'invalid_client', 'malformed basic credentials');
  }
  return { id: formDecode(decoded.slice(0, colon)), secret: formDecode(decoded.slice(colon + 1)) };
}

function formDecode(s) {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

function sameSecret(a, b) {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

function decodeSegment(segment, what) {
  try {
    return JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch {
    throw new OAuthError(401, 'invalid_client', `client assertion ${what} is not base64url JSON`);
  }
}

/**
 * Checks a signature over `data` with one key for a JWS alg (RS384 or ES384).
 * @param {string} alg
 * @param {import('node:crypto').KeyObject} key
 * @param {Buffer} data
 * @param {Buffer} signature
 */
export function verifyJws(alg, key, data, signature) {
  if (alg === 'RS384') {
    if (key.asymmetricKeyType !== 'rsa') {
      return false;
    }
    return verify('sha384', data, key, signature);
  }
  if (alg === 'ES384') {
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'secp384r1') {
      return false;
    }
    if (signature.length !== 96) {
      return false;
    }
    return verify('sha384', data, { key, dsaEncoding: 'ieee-p1363' }, signature);
  }
  return false;
}

/** Token issuing and checking. */
export class Auth {
  /**
   * @param {{
   *   clients?: Map<string, string>,
   *   jwtClients?: Map<string, Array<{ key: import('node:crypto').KeyObject, kid: string | undefined }>>,
   *   staticToken?: string,
   *   tokenTtl?: number,
   *   disabled?: boolean,
   *   tokenUrl?: string,
   *   now?: () => number,
   * }} options
   */
  constructor(options) {
    this.clients = options.clients ?? new Map();
    this.jwtClients = options.jwtClients ?? new Map();
    this.staticToken = options.staticToken;
    this.tokenTtl = options.tokenTtl ?? 3600;
    this.disabled = Boolean(options.disabled);
    /** The absolute token URL client assertions must name as `aud`; set once the port is known. */
    this.tokenUrl = options.tokenUrl ?? '';
    this.now = options.now ?? Date.now;
    /** @type {Map<string, number>} token → expiry (ms since epoch) */
    this.tokens = new Map();
    /** @type {Map<string, number>} client id + jti → exp (ms) */
    this.seenJti = new Map();
    this.issuedSinceSweep = 0;
  }

  /** Invalidates every issued token (the static token stays valid). */
  revokeAll() {
    this.tokens.clear();
  }

  /**
   * Issues an opaque token.
   * @param {string | undefined} scope
   */
  issue(scope) {
    const token = randomBytes(24).toString('base64url');
    this.tokens.set(token, this.now() + this.tokenTtl * 1000);
    if (++this.issuedSinceSweep >= 1000) {
      this.sweep();
    }
    const body = { access_token: token, token_type: 'Bearer', expires_in: this.tokenTtl };
    if (scope) {
      body.scope = scope;
    }
    return body;
  }

  sweep() {
    this.issuedSinceSweep = 0;
    const now = this.now();
    for (const [token, expiry] of this.tokens) {
      if (expiry <= now) {
        this.tokens.delete(token);
      }
    }
    for (const [jti, exp] of this.seenJti) {
      if (exp <= now) {
        this.seenJti.delete(jti);
      }
    }
  }

  /**
   * Checks an Authorization header on a FHIR request.
   * @param {string | undefined} header
   * @returns {null | { error?: string, description: string }} null when the request may proceed
   */
  checkBearer(header) {
    if (this.disabled) {
      return null;
    }
    if (!header) {
      return { description: 'missing bearer token: send Authorization: Bearer <token> from POST /oauth2/token' };
    }
    if (!/^bearer /i.test(header)) {
      return { error: 'invalid_request', description: 'the Authorization header must use the Bearer scheme' };
    }
    const token = header.slice(7).trim();
    if (this.staticToken !== undefined && token === this.staticToken) {
      return null;
    }
    const expiry = this.tokens.get(token);
    if (expiry === undefined) {
      return { error: 'invalid_token', description: 'unknown or revoked token: request a new one' };
    }
    if (expiry <= this.now()) {
      this.tokens.delete(token);
      return { error: 'invalid_token', description: 'token expired: request a new one' };
    }
    return null;
  }

  /**
   * Handles a token request.
   * @param {string | undefined} authorization the Authorization header
   * @param {string | undefined} contentType
   * @param {string} body the raw request body
   * @returns {{ status: number, body: object, headers: Record<string, string> }}
   */
  tokenRequest(authorization, contentType, body) {
    const headers = { 'cache-control': 'no-store', pragma: 'no-cache' };
    try {
      const result = this.authenticate(authorization, contentType, body);
      return { status: 200, body: this.issue(result.scope), headers };
    } catch (err) {
      if (!(err instanceof OAuthError)) {
        throw err;
      }
      if (err.status === 401 && authorization && /^basic /i.test(authorization)) {
        headers['www-authenticate'] = 'Basic realm="iomt-test-fhir"';
      }
      return { status: err.status, body: { error: err.error, error_description: err.message }, headers };
    }
  }

  /** @returns {{ clientId: string, scope: string | undefined }} */
  authenticate(authorization, contentType, body) {
    if (!contentType || !contentType.toLowerCase().startsWith('application/x-www-form-urlencoded')) {
      throw new OAuthError(400, 'invalid_request', 'the token request must be application/x-www-form-urlencoded');
    }
    const form = new URLSearchParams(body);
    const grantType = form.get('grant_type');
    if (!grantType) {
      throw new OAuthError(400, 'invalid_request', 'missing grant_type');
    }
    if (grantType !== 'client_credentials') {
      throw new OAuthError(400, 'unsupported_grant_type', `grant_type ${grantType} is not supported: use client_credentials`);
    }
    const scope = form.get('scope') ?? undefined;
    const basic = parseBasicAuth(authorization);
    const assertionType = form.get('client_assertion_type');
    const formId = form.get('client_id') ?? undefined;
    const formSecret = form.get('client_secret') ?? undefined;
    const methods = [basic, assertionType, formSecret].filter((m) => m !== null && m !== undefined).length;
    if (methods > 1) {
      throw new OAuthError(400, 'invalid_request', 'use exactly one client authentication method');
    }
    if (assertionType !== null) {
      if (assertionType !== JWT_BEARER) {
        throw new OAuthError(401, 'invalid_client', `unsupported client_assertion_type: use ${JWT_BEARER}`);
      }
      const clientId = this.verifyAssertion(form.get('client_assertion') ?? '', formId);
      return { clientId, scope };
    }
    const id = basic ? basic.id : formId;
    const secret = basic ? basic.secret : formSecret;
    if (id === undefined || secret === undefined) {
      throw new OAuthError(401, 'invalid_client', 'missing client credentials');
    }
    const expected = this.clients.get(id);
    // Compare against something even for unknown ids so timing does not reveal which ids exist.
    const ok = sameSecret(secret, expected ?? '\u0000unknown');
    if (expected === undefined || !ok) {
      throw new OAuthError(401, 'invalid_client', 'unknown client or wrong secret');
    }
    return { clientId: id, scope };
  }

  /**
   * Verifies a private_key_jwt client assertion and returns the client id.
   * @param {string} jwt
   * @param {string | undefined} formClientId client_id from the form, if sent
   */
  verifyAssertion(jwt, formClientId) {
    const parts = jwt.split('.');
    if (parts.length !== 3) {
      throw new OAuthError(401, 'invalid_client', 'client_assertion must be a signed JWT (three dot-separated parts)');
    }
    const header = decodeSegment(parts[0], 'header');
    const claims = decodeSegment(parts[1], 'payload');
    if (header.alg !== 'RS384' && header.alg !== 'ES384') {
      throw new OAuthError(401, 'invalid_client', `client assertion alg ${header.alg} is not accepted: sign with RS384 or ES384`);
    }
    const clientId = claims.iss;
    if (typeof clientId !== 'string' || claims.sub !== clientId) {
      throw new OAuthError(401, 'invalid_client', 'client assertion iss and sub must both be the client id');
    }
    if (formClientId !== undefined && formClientId !== clientId) {
      throw new OAuthError(401, 'invalid_client', 'client_id does not match the client assertion issuer');
    }
    const keys = this.jwtClients.get(clientId);
    if (!keys) {
      throw new OAuthError(401, 'invalid_client', 'unknown client');
    }
    const candidates = header.kid !== undefined && keys.some((k) => k.kid === header.kid)
      ? keys.filter((k) => k.kid === header.kid)
      : keys;
    const data = Buffer.from(`${parts[0]}.${parts[1]}`);
    const signature = Buffer.from(parts[2], 'base64url');
    if (!candidates.some(({ key }) => verifyJws(header.alg, key, data, signature))) {
      throw new OAuthError(401, 'invalid_client', 'client assertion signature does not verify with the registered key');
    }
    const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!audiences.includes(this.tokenUrl)) {
      throw new OAuthError(401, 'invalid_client', `client assertion aud must be the token URL ${this.tokenUrl}`);
    }
    const nowS = this.now() / 1000;
    if (typeof claims.exp !== 'number') {
      throw new OAuthError(401, 'invalid_client', 'client assertion has no numeric exp');
    }
    if (claims.exp <= nowS - CLOCK_SKEW_S) {
      throw new OAuthError(401, 'invalid_client', 'client assertion expired');
    }
    if (claims.exp > nowS + MAX_ASSERTION_LIFETIME_S + CLOCK_SKEW_S) {
      throw new OAuthError(401, 'invalid_client', 'client assertion exp is more than five minutes ahead');
    }
    if (typeof claims.nbf === 'number' && claims.nbf > nowS + CLOCK_SKEW_S) {
      throw new OAuthError(401, 'invalid_client', 'client assertion is not valid yet (nbf)');
    }
    if (typeof claims.jti !== 'string' || claims.jti === '') {
      throw new OAuthError(401, 'invalid_client', 'client assertion needs a jti');
    }
    const jtiKey = `${clientId}\u0000${claims.jti}`;
    if (this.seenJti.has(jtiKey)) {
      throw new OAuthError(401, 'invalid_client', 'client assertion jti was already used: send a fresh assertion');
    }
    this.seenJti.set(jtiKey, claims.exp * 1000 + CLOCK_SKEW_S * 1000);
    return clientId;
  }
}
