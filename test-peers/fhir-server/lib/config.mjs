// Command-line flags of server.mjs. Pure: parsing never touches the network; key files are read
// by server.mjs after parsing.

import { parseArgs } from 'node:util';

/** Usage text printed by --help and after a flag error. */
export const USAGE = `usage: node server.mjs [flags]

  --port N                 port to listen on; 0 (default) picks a free one
  --host H                 loopback address to bind (default 127.0.0.1; anything else is refused)
  --client ID:SECRET       a client-credentials client (repeatable)
  --static-token T         a bearer token that is always accepted
  --jwt-client ID:PATH     a private_key_jwt client and its public key file: PEM, JWK or JWK Set (repeatable)
  --token-ttl SECONDS      lifetime of issued tokens (default 3600)
  --no-auth                accept FHIR requests without a bearer token
  --admin-token T          bearer token for /__admin/* (without it the admin API is disabled)
  --page-size N            search page size when the request has no _count (default 20)
  --max-page-size N        largest _count honoured (default 1000)
  --base-path P            FHIR base path, e.g. /fhir (default: the root)
  --identifier-match M     exact (default) or case-insensitive identifier search
  --identifier-max-length N  match only the first N characters of identifier values
  --no-validate            skip R4 validation of written resources (throughput benchmarks only:
                           tests must keep validation, it is what catches invalid Observations)
  --quiet                  no request log on stderr
  --exit-with-stdin        exit when stdin closes (test harnesses: no orphan when the parent dies)
  --help                   print this text
`;

function positiveInt(name, raw, { allowZero = false, max = Number.MAX_SAFE_INTEGER } = {}) {
  if (!/^\d+$/.test(raw)) {
    throw new Error(`--${name} must be a whole number, got "${raw}"`);
  }
  const n = Number(raw);
  if ((!allowZero && n === 0) || n > max) {
    throw new Error(`--${name} must be between ${allowZero ? 0 : 1} and ${max}, got ${n}`);
  }
  return n;
}

function splitPair(name, raw, what) {
  const colon = raw.indexOf(':');
  if (colon <= 0 || colon === raw.length - 1) {
    throw new Error(`--${name} must look like ${what}, got "${raw}"`);
  }
  return [raw.slice(0, colon), raw.slice(colon + 1)];
}

/** Whether a host string names a loopback address. */
export function isLoopback(host) {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/**
 * Parses the command line. Throws an Error whose message names the flag to fix.
 * @param {string[]} argv arguments after the script name
 */
export function parseConfig(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        port: { type: 'string', default: '0' },
        host: { type: 'string', default: '127.0.0.1' },
        client: { type: 'string', multiple: true, default: [] },
        'static-token': { type: 'string' },
        'jwt-client': { type: 'string', multiple: true, default: [] },
        'token-ttl': { type: 'string', default: '3600' },
        'no-auth': { type: 'boolean', default: false },
        'admin-token': { type: 'string' },
        'page-size': { type: 'string', default: '20' },
        'max-page-size': { type: 'string', default: '1000' },
        'base-path': { type: 'string', default: '' },
        'identifier-match': { type: 'string', default: 'exact' },
        'identifier-max-length': { type: 'string' },
        'no-validate': { type: 'boolean', default: false },
        quiet: { type: 'boolean', default: false },
        'exit-with-stdin': { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
    }));
  } catch (err) {
    throw new Error(err.message.replace(/^./, (c) => c.toLowerCase()));
  }
  if (values.help) {
    return { help: true };
  }
  if (!isLoopback(values.host)) {
    throw new Error(`--host ${values.host} is not a loopback address: this test server only listens on 127.0.0.1 or ::1`);
  }
  const clients = new Map();
  for (const raw of values.client) {
    const [id, secret] = splitPair('client', raw, 'ID:SECRET');
    clients.set(id, secret);
  }
  const jwtClients = new Map();
  for (const raw of values['jwt-client']) {
    const [id, path] = splitPair('jwt-client', raw, 'ID:PATH');
    jwtClients.set(id, path);
  }
  const staticToken = values['static-token'];
  if (staticToken !== undefined && staticToken === '') {
    throw new Error('--static-token must not be empty');
  }
  const noAuth = values['no-auth'];
  if (!noAuth && clients.size === 0 && jwtClients.size === 0 && staticToken === undefined) {
    throw new Error('no credentials configured: pass --client ID:SECRET, --jwt-client ID:PATH, --static-token T or --no-auth');
  }
  const adminToken = values['admin-token'];
  if (adminToken !== undefined && adminToken === '') {
    throw new Error('--admin-token must not be empty');
  }
  let basePath = values['base-path'];
  if (basePath !== '') {
    if (!/^\/[A-Za-z0-9._~\-/]*$/.test(basePath)) {
      throw new Error(`--base-path must start with / and contain only URL path characters, got "${basePath}"`);
    }
    basePath = basePath.replace(/\/+$/, '');
  }
  const match = values['identifier-match'];
  if (match !== 'exact' && match !== 'case-insensitive') {
    throw new Error(`--identifier-match must be exact or case-insensitive, got "${match}"`);
  }
  const maxPageSize = positiveInt('max-page-size', values['max-page-size']);
  return {
    help: false,
    port: positiveInt('port', values.port, { allowZero: true, max: 65535 }),
    host: values.host === 'localhost' ? '127.0.0.1' : values.host,
    clients,
    jwtClients,
    staticToken,
    tokenTtl: positiveInt('token-ttl', values['token-ttl']),
    noAuth,
    adminToken,
    pageSize: Math.min(positiveInt('page-size', values['page-size']), maxPageSize),
    maxPageSize,
    basePath,
    identifierCaseInsensitive: match === 'case-insensitive',
    identifierMaxLength:
      values['identifier-max-length'] === undefined
        ? undefined
        : positiveInt('identifier-max-length', values['identifier-max-length']),
    validate: !values['no-validate'],
    quiet: values.quiet,
    exitWithStdin: values['exit-with-stdin'],
  };
}
