import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import { test } from 'node:test';
import { Auth, JWT_BEARER, loadPublicKeys, parseBasicAuth } from '../lib/auth.mjs';

const TOKEN_URL = 'http://127.0.0.1:1234/oauth2/token';
const FORM = 'application/x-www-form-urlencoded';

function jwt(alg, privateKey, claims, header = {}) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${enc({ alg, typ: 'JWT', ...header })}.${enc(claims)}`;
  const signature =
    alg === 'ES384'
      ? sign('sha384', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' })
      : sign('sha384', Buffer.from(input), privateKey);
  return `${input}.${signature.toString('base64url')}`;
}

function claims(overrides = {}) {
  const now = Math.floor(Date.now() / 1000);
  return { iss: 'bk', sub: 'bk', aud: TOKEN_URL, exp: now + 240, jti: randomUUID(), ...overrides };
}

function setup() {
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keys = [
    ...loadPublicKeys(ec.publicKey.export({ type: 'spki', format: 'pem' })),
    ...loadPublicKeys(JSON.stringify({ keys: [{ ...rsa.publicKey.export({ format: 'jwk' }), kid: 'rsa-1' }] })),
  ];
  const auth = new Auth({
    clients: new Map([['c', 's3cret']]),
    jwtClients: new Map([['bk', keys]]),
    staticToken: 'static',
    tokenTtl: 60,
    tokenUrl: TOKEN_URL,
  });
  return { auth, ec, rsa };
}

const assertion = (token) =>
  `grant_type=client_credentials&client_assertion_type=${encodeURIComponent(JWT_BEARER)}&client_assertion=${token}`;

test('client secret in the form or with HTTP Basic; wrong secrets are invalid_client', () => {
  const { auth } = setup();
  const ok = auth.tokenRequest(undefined, FORM, 'grant_type=client_credentials&client_id=c&client_secret=s3cret&scope=system%2F*.write');
  assert.equal(ok.status, 200);
  assert.equal(ok.body.token_type, 'Bearer');
  assert.equal(ok.body.expires_in, 60);
  assert.equal(ok.body.scope, 'system/*.write');
  assert.equal(auth.checkBearer(`Bearer ${ok.body.access_token}`), null);

  const basic = `Basic ${Buffer.from('c:s3cret').toString('base64')}`;
  assert.equal(auth.tokenRequest(basic, FORM, 'grant_type=client_credentials').status, 200);

  const wrong = auth.tokenRequest(undefined, FORM, 'grant_type=client_credentials&client_id=c&client_secret=nope');
  assert.equal(wrong.status, 401);
  assert.equal(wrong.body.error, 'invalid_client');
  const wrongBasic = auth.tokenRequest(`Basic ${Buffer.from('c:nope').toString('base64')}`, FORM, 'grant_type=client_credentials');
  assert.equal(wrongBasic.status, 401);
  assert.match(wrongBasic.headers['www-authenticate'], /^Basic/);

  assert.equal(auth.tokenRequest(undefined, FORM, 'grant_type=password').body.error, 'unsupported_grant_type');
  assert.equal(auth.tokenRequest(undefined, 'application/json', '{}').body.error, 'invalid_request');
});

test('bearer check: missing, unknown, expired, static, revoked', () => {
  let now = 1_000_000;
  const { auth } = setup();
  auth.now = () => now;
  assert.match(auth.checkBearer(undefined).description, /missing bearer token/);
  assert.equal(auth.checkBearer('Bearer nope').error, 'invalid_token');
  assert.equal(auth.checkBearer('Bearer static'), null);
  const token = auth.issue(undefined).access_token;
  assert.equal(auth.checkBearer(`Bearer ${token}`), null);
  now += 61_000;
  assert.match(auth.checkBearer(`Bearer ${token}`).description, /expired/);
  const again = auth.issue(undefined).access_token;
  auth.revokeAll();
  assert.equal(auth.checkBearer(`Bearer ${again}`).error, 'invalid_token');
  assert.equal(auth.checkBearer('Bearer static'), null);
});

test('private_key_jwt with ES384 (PEM key) and RS384 (JWK Set key)', () => {
  const { auth, ec, rsa } = setup();
  const es = auth.tokenRequest(undefined, FORM, assertion(jwt('ES384', ec.privateKey, claims())));
  assert.equal(es.status, 200, JSON.stringify(es.body));
  const rs = auth.tokenRequest(undefined, FORM, assertion(jwt('RS384', rsa.privateKey, claims(), { kid: 'rsa-1' })));
  assert.equal(rs.status, 200, JSON.stringify(rs.body));
});

test('private_key_jwt rejections', () => {
  const { auth, ec, rsa } = setup();
  const reject = (token, pattern) => {
    const r = auth.tokenRequest(undefined, FORM, assertion(token));
    assert.equal(r.status, 401);
    assert.equal(r.body.error, 'invalid_client');
    assert.match(r.body.error_description, pattern);
  };
  const other = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  reject(jwt('ES384', other.privateKey, claims()), /signature does not verify/);
  reject(jwt('ES384', ec.privateKey, claims({ aud: 'http://elsewhere/token' })), /aud must be the token URL/);
  reject(jwt('ES384', ec.privateKey, claims({ exp: Math.floor(Date.now() / 1000) - 60 })), /expired/);
  reject(jwt('ES384', ec.privateKey, claims({ exp: Math.floor(Date.now() / 1000) + 3600 })), /five minutes/);
  reject(jwt('ES384', ec.privateKey, claims({ sub: 'someone' })), /iss and sub/);
  reject(jwt('ES384', ec.privateKey, claims({ iss: 'x', sub: 'x' })), /unknown client/);
  reject(jwt('ES384', ec.privateKey, claims({ jti: undefined })), /needs a jti/);
  reject(jwt('RS256', rsa.privateKey, claims()), /RS384 or ES384/);
  const once = jwt('ES384', ec.privateKey, claims({ jti: 'same' }));
  assert.equal(auth.tokenRequest(undefined, FORM, assertion(once)).status, 200);
  reject(once, /already used/);
  reject('not-a-jwt', /three dot-separated parts/);
});

test('basic credentials are form-decoded', () => {
  assert.deepEqual(parseBasicAuth(`Basic ${Buffer.from('a%3Ab:p%40ss+word').toString('base64')}`), {
    id: 'a:b',
    secret: 'p@ss word',
  });
  assert.equal(parseBasicAuth('Bearer x'), null);
});
