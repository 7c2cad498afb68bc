// The HTTP layer: maps node:http requests onto Medplum's FhirRouter and adds what the router
// leaves out: authentication, the token endpoint, the capability statement, search paging links,
// ETag/Location headers, 201 for update-as-create, fault injection, the admin API, statistics
// and the request log.
//
// Routes (BASE = --base-path, empty by default):
//   POST /oauth2/token                        OAuth2 client credentials (lib/auth.mjs)
//   GET  BASE/metadata                        CapabilityStatement (no token needed)
//   GET  BASE/.well-known/smart-configuration SMART discovery (no token needed)
//   *    BASE/...                             FHIR R4 REST, bearer token required unless --no-auth
//   *    /__admin/...                         test control, admin token required (see adminRoute)
//
// The request log has method, path, query parameter NAMES (never values), status and duration:
// paths carry only resource types and ids, query values may carry identifiers.

import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { getStatus, isOk, isResourceType, globalSchema, normalizeOperationOutcome, validateResource } from '@medplum/core';
import { FhirRouter } from '@medplum/fhir-router';
import { FaultInjector, parseFaultConfig } from './faults.mjs';
import { TestRepository } from './repository.mjs';

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const JSON_TYPE = 'application/json; charset=utf-8';
const MAX_BODY = 32 * 1024 * 1024;
const MAX_TOKEN_BODY = 64 * 1024;
const FHIR_METHODS = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']);

function medplumVersion() {
  try {
    const url = new URL('../node_modules/@medplum/fhir-router/package.json', import.meta.url);
    return JSON.parse(readFileSync(url, 'utf8')).version;
  } catch {
    return 'unknown';
  }
}

/** An error that becomes a response with this status. */
class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function outcome(code, diagnostics) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics }] };
}

function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        reject(new HttpError(413, 'too-costly', `request body larger than ${limit} bytes`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Query parameter names only: values may carry identifiers. */
function redactQuery(query) {
  if (!query) {
    return '';
  }
  return '?' + query.split('&').map((kv) => kv.split('=')[0]).join('&');
}

function formToQuery(text) {
  const query = Object.create(null);
  for (const [key, value] of new URLSearchParams(text)) {
    const prev = query[key];
    query[key] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  return query;
}

function intParam(value) {
  if (value === null || value === undefined || !/^\d+$/.test(value)) {
    return undefined;
  }
  return Number(value);
}

/** Request counters for `GET /__admin/stats`. */
export class Stats {
  constructor() {
    this.reset();
  }

  reset() {
    this.requests = 0;
    this.byMethod = {};
    this.byStatus = {};
    this.byResourceType = {};
    this.byKey = {};
    this.faults = {};
    this.tokens = { issued: 0, rejected: 0 };
  }

  /**
   * @param {string} method
   * @param {string} resourceType
   * @param {number | string} status a status code, or "drop"/"dropAfter"
   */
  fhir(method, resourceType, status) {
    this.requests++;
    this.byMethod[method] = (this.byMethod[method] ?? 0) + 1;
    this.byStatus[status] = (this.byStatus[status] ?? 0) + 1;
    const type = resourceType || '-';
    this.byResourceType[type] = (this.byResourceType[type] ?? 0) + 1;
    const key = `${method} ${type} ${status}`;
    this.byKey[key] = (this.byKey[key] ?? 0) + 1;
  }

  fault(kind) {
    this.faults[kind] = (this.faults[kind] ?? 0) + 1;
  }

  snapshot() {
    return {
      requests: this.requests,
      byMethod: this.byMethod,
      byStatus: this.byStatus,
      byResourceType: this.byResourceType,
      byKey: this.byKey,
      faults: this.faults,
      tokens: this.tokens,
    };
  }
}

/** The server state and request handler. */
export class App {
  /**
   * @param {ReturnType<import('./config.mjs').parseConfig>} config
   * @param {import('./auth.mjs').Auth} auth
   */
  constructor(config, auth) {
    this.config = config;
    this.auth = auth;
    this.repo = new TestRepository({
      pageSize: config.pageSize,
      maxPageSize: config.maxPageSize,
      caseInsensitive: config.identifierCaseInsensitive,
      maxLength: config.identifierMaxLength,
      validate: config.validate,
    });
    this.router = new FhirRouter();
    this.faults = new FaultInjector();
    this.stats = new Stats();
    this.log = config.quiet ? () => {} : (line) => process.stderr.write(line + '\n');
    this.version = medplumVersion();
    this.startedAt = new Date().toISOString();
    this.setOrigin('http://127.0.0.1');
    this.handle = this.handle.bind(this);
  }

  /**
   * Sets the scheme/host/port the server is reached at (known once listening).
   * @param {string} origin e.g. http://127.0.0.1:8080
   */
  setOrigin(origin) {
    this.origin = origin;
    this.baseUrl = origin + this.config.basePath;
    this.tokenUrl = origin + '/oauth2/token';
    this.auth.tokenUrl = this.tokenUrl;
    this.capability = JSON.stringify(this.capabilityStatement());
    this.smartConfiguration = JSON.stringify({
      token_endpoint: this.tokenUrl,
      grant_types_supported: ['client_credentials'],
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
      scopes_supported: ['system/*.read', 'system/*.write', 'system/*.rs', 'system/*.cruds'],
      capabilities: ['client-confidential-symmetric', 'client-confidential-asymmetric'],
    });
  }

  capabilityStatement() {
    const types = Object.keys(globalSchema.types).filter((t) => isResourceType(t)).sort();
    const statement = {
      resourceType: 'CapabilityStatement',
      id: 'iomt-test-fhir-server',
      status: 'active',
      date: this.startedAt,
      kind: 'instance',
      software: { name: 'iomt test FHIR server (@medplum/fhir-router on MemoryRepository)', version: this.version },
      implementation: { description: 'FHIR R4 server for iomt integration tests', url: this.baseUrl },
      fhirVersion: '4.0.1',
      format: ['application/fhir+json', 'json'],
      rest: [
        {
          mode: 'server',
          resource: types.map((type) => ({
            type,
            interaction: ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'].map(
              (code) => ({ code })
            ),
            versioning: 'versioned',
            readHistory: true,
            updateCreate: true,
            conditionalCreate: true,
            conditionalUpdate: true,
            conditionalDelete: 'single',
            searchParam: [
              { name: '_id', type: 'token' },
              { name: '_lastUpdated', type: 'date' },
              ...(globalSchema.types[type]?.searchParams?.identifier ? [{ name: 'identifier', type: 'token' }] : []),
            ],
          })),
          interaction: [{ code: 'batch' }, { code: 'transaction' }, { code: 'search-system' }],
        },
      ],
    };
    if (!this.config.noAuth) {
      statement.rest[0].security = {
        service: [
          {
            coding: [
              { system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' },
            ],
          },
        ],
        extension: [
          {
            url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
            extension: [{ url: 'token', valueUri: this.tokenUrl }],
          },
        ],
      };
    }
    validateResource(statement);
    return statement;
  }

  /** Ends a request: records it, logs it, and sends the response (or drops the connection). */
  finish(req, res, ctx, status, body, headers = {}) {
    if (ctx.dropAfter) {
      this.stats.fault('dropAfter');
      status = 'dropAfter';
    }
    const ms = performance.now() - ctx.t0;
    if (ctx.kind === 'fhir') {
      this.stats.fhir(ctx.method, ctx.resourceType, status);
    }
    this.log(`${ctx.method} ${ctx.path}${redactQuery(ctx.query)} ${status} ${ms.toFixed(1)}ms`);
    if (status === 'drop' || status === 'dropAfter') {
      req.socket.destroy();
      return;
    }
    if (body !== undefined && body !== null) {
      const buf = typeof body === 'string' ? Buffer.from(body) : body;
      headers['content-length'] = buf.length;
      res.writeHead(status, headers);
      res.end(buf);
    } else {
      headers['content-length'] = 0;
      res.writeHead(status, headers);
      res.end();
    }
  }

  finishOutcome(req, res, ctx, status, code, diagnostics, headers = {}) {
    headers['content-type'] = FHIR_JSON;
    this.finish(req, res, ctx, status, JSON.stringify(outcome(code, diagnostics)), headers);
  }

  finishJson(req, res, ctx, status, value, headers = {}) {
    headers['content-type'] = JSON_TYPE;
    this.finish(req, res, ctx, status, JSON.stringify(value), headers);
  }

  /** The node:http request listener. */
  async handle(req, res) {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const ctx = {
      t0: performance.now(),
      method: req.method ?? 'GET',
      path: q < 0 ? url : url.slice(0, q),
      query: q < 0 ? '' : url.slice(q + 1),
      kind: 'other',
      resourceType: '',
      dropAfter: false,
    };
    try {
      if (ctx.path === '/oauth2/token') {
        await this.tokenRoute(req, res, ctx);
        return;
      }
      if (ctx.path === '/__admin' || ctx.path.startsWith('/__admin/')) {
        await this.adminRoute(req, res, ctx);
        return;
      }
      const base = this.config.basePath;
      if (base !== '' && ctx.path !== base && !ctx.path.startsWith(base + '/')) {
        this.finishOutcome(req, res, ctx, 404, 'not-found', `not a FHIR path: the FHIR base is ${this.baseUrl}`);
        return;
      }
      await this.fhirRoute(req, res, ctx, ctx.path.slice(base.length).replace(/^\/+/, ''));
    } catch (err) {
      if (err instanceof HttpError) {
        this.finishOutcome(req, res, ctx, err.status, err.code, err.message);
        return;
      }
      process.stderr.write(`internal error on ${ctx.method} ${ctx.path}: ${err?.message ?? err}\n`);
      if (!res.headersSent) {
        this.finishOutcome(req, res, ctx, 500, 'exception', 'internal error in the test server wrapper');
      }
    }
  }

  async tokenRoute(req, res, ctx) {
    if (ctx.method !== 'POST') {
      this.finishJson(req, res, ctx, 405, { error: 'invalid_request', error_description: 'use POST' }, { allow: 'POST' });
      return;
    }
    const body = (await readBody(req, MAX_TOKEN_BODY)).toString('utf8');
    const fault = this.faults.decide({ method: 'POST', resourceType: '', ifMatch: false, token: true });
    if (fault && this.applyFault(req, res, ctx, fault, true)) {
      return;
    }
    const result = this.auth.tokenRequest(req.headers.authorization, req.headers['content-type'], body);
    if (result.status === 200) {
      this.stats.tokens.issued++;
    } else {
      this.stats.tokens.rejected++;
    }
    this.finishJson(req, res, ctx, result.status, result.body, result.headers);
  }

  /**
   * Answers a request with the fault; returns false when the fault is dropAfter (the request
   * goes on, and its answer is thrown away).
   */
  applyFault(req, res, ctx, fault, oauth = false) {
    if (fault.kind === 'dropAfter') {
      ctx.dropAfter = true;
      return false;
    }
    if (fault.kind === 'drop') {
      this.stats.fault('drop');
      this.finish(req, res, ctx, 'drop');
      return true;
    }
    this.stats.fault(String(fault.status));
    const headers = {};
    if (fault.retryAfter !== undefined) {
      headers['retry-after'] = String(fault.retryAfter);
    }
    if (oauth) {
      this.finishJson(req, res, ctx, fault.status, { error: 'temporarily_unavailable', error_description: 'injected fault' }, headers);
      return true;
    }
    const code = fault.status === 429 ? 'throttled' : fault.status === 412 ? 'conflict' : fault.status >= 500 ? 'transient' : 'processing';
    this.finishOutcome(req, res, ctx, fault.status, code, `injected fault ${fault.status}`, headers);
    return true;
  }

  async fhirRoute(req, res, ctx, rel) {
    ctx.kind = 'fhir';
    const method = ctx.method;
    const segments = rel.split('/').filter(Boolean);
    const first = segments[0] ?? '';
    ctx.resourceType = first === '' ? (method === 'POST' ? 'Bundle' : '') : first;

    const isPublic = method === 'GET' && segments.length === 1 && first === 'metadata';
    const isSmart = method === 'GET' && segments.length === 2 && first === '.well-known' && segments[1] === 'smart-configuration';
    if (isSmart) {
      ctx.kind = 'other';
      this.finish(req, res, ctx, 200, this.smartConfiguration, { 'content-type': JSON_TYPE });
      return;
    }
    if (!isPublic) {
      const denied = this.auth.checkBearer(req.headers.authorization);
      if (denied) {
        let challenge = 'Bearer realm="iomt-test-fhir"';
        if (denied.error) {
          challenge += `, error="${denied.error}", error_description="${denied.description}"`;
        }
        this.finishOutcome(req, res, ctx, 401, 'login', denied.description, { 'www-authenticate': challenge });
        return;
      }
    }
    if (!FHIR_METHODS.has(method)) {
      this.finishOutcome(req, res, ctx, 405, 'not-supported', `method ${method} is not supported`, {
        allow: [...FHIR_METHODS].join(', '),
      });
      return;
    }
    if (first !== '' && first !== 'metadata' && !isResourceType(first)) {
      this.finishOutcome(req, res, ctx, 404, 'not-supported', `unknown resource type ${first}`);
      return;
    }

    let body;
    /** The form body of a `POST _search`, as sent: already a valid query string. */
    let searchForm;
    const isSearchPost = method === 'POST' && segments.length === 2 && segments[1] === '_search';
    if (method === 'POST' || method === 'PUT' || method === 'PATCH') {
      const raw = await readBody(req, MAX_BODY);
      const contentType = (req.headers['content-type'] ?? '').toLowerCase();
      if (isSearchPost) {
        if (contentType && !contentType.startsWith('application/x-www-form-urlencoded')) {
          throw new HttpError(415, 'not-supported', 'POST _search needs application/x-www-form-urlencoded');
        }
        searchForm = raw.toString('utf8');
        body = formToQuery(searchForm);
      } else {
        if (contentType && !contentType.includes('json')) {
          throw new HttpError(415, 'not-supported', 'send FHIR resources as application/fhir+json');
        }
        if (raw.length === 0) {
          throw new HttpError(400, 'invalid', 'empty request body');
        }
        try {
          body = JSON.parse(raw.toString('utf8'));
        } catch (err) {
          throw new HttpError(400, 'invalid', `request body is not JSON: ${err.message}`);
        }
        if (body === null || typeof body !== 'object') {
          throw new HttpError(400, 'invalid', 'request body must be a JSON object');
        }
      }
    }

    const fault = this.faults.decide({
      method,
      resourceType: ctx.resourceType,
      ifMatch: Boolean(req.headers['if-match']),
      token: false,
    });
    if (fault && this.applyFault(req, res, ctx, fault)) {
      return;
    }

    if (isPublic) {
      this.finish(req, res, ctx, 200, this.capability, { 'content-type': FHIR_JSON });
      return;
    }
    if (first.startsWith('$') || segments[1]?.startsWith('$')) {
      this.finishOutcome(req, res, ctx, 404, 'not-supported', `operation ${rel} is not supported`);
      return;
    }

    const isInstancePut = method === 'PUT' && segments.length === 2;
    const existed = isInstancePut ? this.repo.exists(first, segments[1]) : true;
    const putExisted = method === 'POST' && first === '' ? this.batchPutExistence(body) : undefined;
    const fhirRequest = {
      method,
      url: rel + (ctx.query ? '?' + ctx.query : ''),
      pathname: '',
      body,
      params: {},
      query: {},
      headers: req.headers,
      config: { transactions: true },
    };
    let result;
    try {
      result = await this.router.handleRequest(fhirRequest, this.repo);
    } catch (err) {
      result = [normalizeOperationOutcome(err)];
    }
    const [resultOutcome, resource] = result;
    let status = getStatus(resultOutcome);
    if (!isOk(resultOutcome) || !resource) {
      this.finish(req, res, ctx, status, JSON.stringify(resource ?? resultOutcome), { 'content-type': FHIR_JSON });
      return;
    }
    if (isInstancePut && status === 200 && !existed) {
      status = 201;
    }
    const headers = { 'content-type': FHIR_JSON };
    if (resource.resourceType === 'Bundle' && resource.type === 'searchset' && (method === 'GET' || isSearchPost)) {
      // The form body is already query syntax: the self link takes it as sent (no re-encoding),
      // and its parameters as parsed once for the router.
      const query = isSearchPost ? body : formToQuery(ctx.query);
      this.decorateSearchset(resource, first, query, isSearchPost ? searchForm : ctx.query);
    } else if (resource.resourceType === 'Bundle' && (resource.type === 'batch-response' || resource.type === 'transaction-response')) {
      this.decorateBatchResponse(resource, putExisted);
    } else if (resource.meta?.versionId && resource.id) {
      headers.etag = `W/"${resource.meta.versionId}"`;
      if (resource.meta.lastUpdated) {
        headers['last-modified'] = new Date(resource.meta.lastUpdated).toUTCString();
      }
      if (status === 201) {
        headers.location = `${this.baseUrl}/${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`;
      }
    }
    // `Prefer: return=…` is about writes; a search always answers with its Bundle.
    const writes = (method === 'POST' && !isSearchPost) || method === 'PUT' || method === 'PATCH';
    const prefer = writes ? req.headers.prefer : undefined;
    if (prefer && /return=minimal/.test(prefer)) {
      this.finish(req, res, ctx, status, undefined, headers);
    } else if (prefer && /return=OperationOutcome/i.test(prefer)) {
      this.finish(req, res, ctx, status, JSON.stringify(resultOutcome), headers);
    } else {
      this.finish(req, res, ctx, status, JSON.stringify(resource), headers);
    }
  }

  /** For a batch/transaction, which `PUT Type/id` entries target an existing resource. */
  batchPutExistence(bundle) {
    if (!bundle || !Array.isArray(bundle.entry)) {
      return undefined;
    }
    return bundle.entry.map((entry) => {
      const request = entry?.request;
      if (request?.method !== 'PUT' || typeof request.url !== 'string' || request.url.includes('?')) {
        return true;
      }
      const parts = request.url.split('/').filter(Boolean);
      return parts.length === 2 ? this.repo.exists(parts[0], parts[1]) : true;
    });
  }

  /**
   * Adds fullUrl/search.mode to entries and the paging links (Medplum's bundles have none):
   * `self` always; `first`, `previous` and `next` only when the results span pages, as HAPI
   * does (FHIR makes them optional). `self` carries the whole query, so a second copy of it in
   * `first` would double a one-page answer to a long search for nothing.
   */
  decorateSearchset(bundle, resourceType, query, rawQuery) {
    const param = (name) => (Array.isArray(query[name]) ? query[name][0] : query[name]);
    const requested = intParam(param('_count'));
    let count = requested === undefined ? this.config.pageSize : Math.min(requested, this.config.maxPageSize);
    if (param('_summary') === 'count') {
      count = 0;
    }
    const offset = intParam(param('_offset')) ?? 0;
    const path = resourceType ? `${this.baseUrl}/${resourceType}` : this.baseUrl;
    const link = (relation, at) => {
      const p = new URLSearchParams(rawQuery);
      p.delete('_offset');
      p.set('_count', String(count));
      if (at > 0) {
        p.set('_offset', String(at));
      }
      return { relation, url: `${path}?${p}` };
    };
    const links = [{ relation: 'self', url: rawQuery ? `${path}?${rawQuery}` : path }];
    const more = count > 0 && typeof bundle.total === 'number' && offset + count < bundle.total;
    if (count > 0 && (offset > 0 || more)) {
      links.push(link('first', 0));
      if (offset > 0) {
        links.push(link('previous', Math.max(0, offset - count)));
      }
      if (more) {
        links.push(link('next', offset + count));
      }
    }
    const entries = bundle.entry?.map((entry) => ({
      fullUrl: `${this.baseUrl}/${entry.resource.resourceType}/${entry.resource.id}`,
      resource: entry.resource,
      search: { mode: 'match' },
    }));
    delete bundle.entry;
    bundle.link = links;
    if (entries) {
      bundle.entry = entries;
    }
  }

  /** Adds etag/lastModified, versioned locations and 201 for update-as-create to batch responses. */
  decorateBatchResponse(bundle, putExisted) {
    bundle.entry?.forEach((entry, i) => {
      const response = entry?.response;
      const resource = entry?.resource;
      if (!response || !resource?.id || !resource.meta?.versionId || !response.status?.startsWith('2')) {
        return;
      }
      if (response.status === '200' && putExisted && putExisted[i] === false) {
        response.status = '201';
      }
      response.location = `${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`;
      response.etag = `W/"${resource.meta.versionId}"`;
      if (resource.meta.lastUpdated) {
        response.lastModified = resource.meta.lastUpdated;
      }
    });
  }

  /**
   * The admin API (admin token required):
   *   GET    /__admin/faults         current fault configuration
   *   POST   /__admin/faults         replace it (lib/faults.mjs for the keys)
   *   DELETE /__admin/faults         no faults
   *   POST   /__admin/reset          delete all resources, zero the stats, clear faults
   *   GET    /__admin/stats          request counters
   *   GET    /__admin/settings       page size and token lifetime
   *   POST   /__admin/settings       change them: {"pageSize": N, "tokenTtl": seconds}
   *   POST   /__admin/revoke-tokens  invalidate every issued token
   */
  async adminRoute(req, res, ctx) {
    ctx.kind = 'admin';
    const body = ['POST', 'PUT'].includes(ctx.method) ? (await readBody(req, MAX_TOKEN_BODY)).toString('utf8') : '';
    if (!this.config.adminToken) {
      this.finishJson(req, res, ctx, 404, { error: 'the admin API is disabled: start the server with --admin-token T' });
      return;
    }
    const header = req.headers.authorization ?? '';
    if (header !== `Bearer ${this.config.adminToken}`) {
      this.finishJson(req, res, ctx, 401, { error: 'admin token required: send Authorization: Bearer <--admin-token>' }, {
        'www-authenticate': 'Bearer realm="iomt-test-fhir-admin"',
      });
      return;
    }
    let input = {};
    if (body.trim() !== '') {
      try {
        input = JSON.parse(body);
      } catch (err) {
        this.finishJson(req, res, ctx, 400, { error: `body is not JSON: ${err.message}` });
        return;
      }
    }
    const route = `${ctx.method} ${ctx.path}`;
    switch (route) {
      case 'GET /__admin/faults':
        this.finishJson(req, res, ctx, 200, this.faults.describe());
        return;
      case 'POST /__admin/faults':
      case 'PUT /__admin/faults': {
        let config;
        try {
          config = parseFaultConfig(input);
        } catch (err) {
          this.finishJson(req, res, ctx, 400, { error: err.message });
          return;
        }
        this.faults.set(config);
        this.finishJson(req, res, ctx, 200, this.faults.describe());
        return;
      }
      case 'DELETE /__admin/faults':
        this.faults.set(parseFaultConfig({}));
        this.finishJson(req, res, ctx, 200, this.faults.describe());
        return;
      case 'POST /__admin/reset':
        this.repo.clear();
        this.stats.reset();
        this.faults.set(parseFaultConfig({}));
        this.finishJson(req, res, ctx, 200, { reset: true });
        return;
      case 'GET /__admin/stats':
        this.finishJson(req, res, ctx, 200, {
          ...this.stats.snapshot(),
          resources: this.repo.size(),
          activeTokens: this.auth.tokens.size,
        });
        return;
      case 'GET /__admin/settings':
        this.finishJson(req, res, ctx, 200, this.settings());
        return;
      case 'POST /__admin/settings':
      case 'PUT /__admin/settings': {
        const error = this.applySettings(input);
        if (error) {
          this.finishJson(req, res, ctx, 400, { error });
          return;
        }
        this.finishJson(req, res, ctx, 200, this.settings());
        return;
      }
      case 'POST /__admin/revoke-tokens':
        this.auth.revokeAll();
        this.finishJson(req, res, ctx, 200, { revoked: true });
        return;
      default:
        this.finishJson(req, res, ctx, 404, { error: `no admin route ${route}` });
    }
  }

  settings() {
    return { pageSize: this.repo.pageSize, maxPageSize: this.repo.maxPageSize, tokenTtl: this.auth.tokenTtl };
  }

  applySettings(input) {
    if (input === null || typeof input !== 'object' || Array.isArray(input)) {
      return 'settings must be a JSON object';
    }
    for (const key of Object.keys(input)) {
      if (key !== 'pageSize' && key !== 'tokenTtl') {
        return `unknown setting "${key}": expected pageSize or tokenTtl`;
      }
    }
    const { pageSize, tokenTtl } = input;
    if (pageSize !== undefined && !(Number.isInteger(pageSize) && pageSize >= 1 && pageSize <= this.repo.maxPageSize)) {
      return `pageSize must be a whole number between 1 and ${this.repo.maxPageSize}`;
    }
    if (tokenTtl !== undefined && !(Number.isInteger(tokenTtl) && tokenTtl >= 1)) {
      return 'tokenTtl must be a whole number of seconds (1 or more)';
    }
    if (pageSize !== undefined) {
      this.repo.pageSize = pageSize;
      this.config = { ...this.config, pageSize };
    }
    if (tokenTtl !== undefined) {
      this.auth.tokenTtl = tokenTtl;
    }
    return undefined;
  }
}
