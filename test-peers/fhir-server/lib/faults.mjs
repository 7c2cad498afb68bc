// Fault injection for FHIR requests, configured at run time through `POST /__admin/faults`.
//
// Each FHIR request the filters select takes the next entry of `script` if one is left,
// otherwise one draw r in [0, 1) from the generator, mapped onto consecutive ranges:
//   [0, dropRate)                        drop: the socket is destroyed before the request is handled
//   next dropAfterRate                   dropAfter: the request IS handled, then the socket is
//                                        destroyed (the write happened, the client never hears)
//   next rate429                         429 Too Many Requests (+ Retry-After when retryAfter is set)
//   next rate503                         503 Service Unavailable (+ Retry-After when retryAfter is set)
//   next rate412                         412 Precondition Failed, only for requests with If-Match
//                                        (a concurrent writer won); other requests pass
//   rest                                 handled normally
// With a `seed` the draws are deterministic (mulberry32): the same sequence of selected requests
// sees the same faults. Without one, Math.random is used.

/** Fault configuration keys accepted by `POST /__admin/faults`. */
export const FAULT_KEYS = Object.freeze([
  'rate429',
  'rate503',
  'rate412',
  'dropRate',
  'dropAfterRate',
  'retryAfter',
  'seed',
  'script',
  'methods',
  'resourceTypes',
  'includeToken',
]);

const RATE_KEYS = ['dropRate', 'dropAfterRate', 'rate429', 'rate503', 'rate412'];
const SCRIPT_WORDS = ['drop', 'dropAfter', 'pass'];

/**
 * A small, fast, seedable PRNG (mulberry32). Returns floats in [0, 1).
 * @param {number} seed
 * @returns {() => number}
 */
export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Validates and normalizes a fault configuration; throws an Error whose message says what to fix.
 * @param {unknown} input the parsed JSON body
 */
export function parseFaultConfig(input) {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new Error('fault configuration must be a JSON object');
  }
  for (const key of Object.keys(input)) {
    if (!FAULT_KEYS.includes(key)) {
      throw new Error(`unknown fault key "${key}": expected one of ${FAULT_KEYS.join(', ')}`);
    }
  }
  const config = {
    dropRate: 0,
    dropAfterRate: 0,
    rate429: 0,
    rate503: 0,
    rate412: 0,
    retryAfter: undefined,
    seed: undefined,
    script: [],
    methods: undefined,
    resourceTypes: undefined,
    includeToken: false,
  };
  let sum = 0;
  for (const key of RATE_KEYS) {
    const v = input[key];
    if (v === undefined) {
      continue;
    }
    if (typeof v !== 'number' || !(v >= 0 && v <= 1)) {
      throw new Error(`${key} must be a number between 0 and 1`);
    }
    config[key] = v;
    sum += v;
  }
  if (sum > 1 + 1e-9) {
    throw new Error(`fault rates add up to ${sum}: their sum must not exceed 1`);
  }
  if (input.retryAfter !== undefined) {
    if (!Number.isInteger(input.retryAfter) || input.retryAfter < 0) {
      throw new Error('retryAfter must be a whole number of seconds (0 or more)');
    }
    config.retryAfter = input.retryAfter;
  }
  if (input.seed !== undefined) {
    if (!Number.isInteger(input.seed)) {
      throw new Error('seed must be an integer');
    }
    config.seed = input.seed;
  }
  if (input.script !== undefined) {
    if (!Array.isArray(input.script)) {
      throw new Error('script must be an array of status codes (400-599) or "drop", "dropAfter", "pass"');
    }
    config.script = input.script.map((entry) => {
      if (Number.isInteger(entry) && entry >= 400 && entry <= 599) {
        return entry;
      }
      if (typeof entry === 'string' && SCRIPT_WORDS.includes(entry)) {
        return entry;
      }
      if (typeof entry === 'string' && /^[45]\d\d$/.test(entry)) {
        return Number(entry);
      }
      throw new Error(`script entry ${JSON.stringify(entry)} is not a status code (400-599), "drop", "dropAfter" or "pass"`);
    });
  }
  for (const key of ['methods', 'resourceTypes']) {
    const v = input[key];
    if (v === undefined) {
      continue;
    }
    if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) {
      throw new Error(`${key} must be an array of strings`);
    }
    config[key] = key === 'methods' ? v.map((m) => m.toUpperCase()) : [...v];
  }
  if (input.includeToken !== undefined) {
    if (typeof input.includeToken !== 'boolean') {
      throw new Error('includeToken must be true or false');
    }
    config.includeToken = input.includeToken;
  }
  return config;
}

/**
 * A fault decision.
 * @typedef {{ kind: 'drop' } | { kind: 'dropAfter' } | { kind: 'status', status: number, retryAfter?: number }} Fault
 */

/** Decides, request by request, which fault (if any) to inject. */
export class FaultInjector {
  constructor() {
    this.set(parseFaultConfig({}));
  }

  /**
   * Replaces the configuration (already validated by parseFaultConfig) and restarts the generator.
   * @param {ReturnType<typeof parseFaultConfig>} config
   */
  set(config) {
    this.config = config;
    this.script = [...config.script];
    this.rng = config.seed === undefined ? Math.random : mulberry32(config.seed);
    this.active =
      this.script.length > 0 || RATE_KEYS.some((key) => config[key] > 0);
  }

  /** The configuration as the admin API reports it. */
  describe() {
    const { script: _script, ...rest } = this.config;
    return { ...rest, scriptRemaining: [...this.script] };
  }

  /**
   * @param {{ method: string, resourceType: string, ifMatch: boolean, token: boolean }} request
   * @returns {Fault | null}
   */
  decide(request) {
    if (!this.active) {
      return null;
    }
    const c = this.config;
    if (request.token) {
      // Token requests are selected by includeToken alone.
      if (!c.includeToken) {
        return null;
      }
    } else if (
      (c.methods && !c.methods.includes(request.method)) ||
      (c.resourceTypes && !c.resourceTypes.includes(request.resourceType))
    ) {
      return null;
    }
    if (this.script.length > 0) {
      const entry = this.script.shift();
      if (entry === 'pass') {
        return null;
      }
      if (entry === 'drop' || entry === 'dropAfter') {
        return { kind: entry };
      }
      return this.statusFault(entry);
    }
    const r = this.rng();
    let edge = c.dropRate;
    if (r < edge) {
      return { kind: 'drop' };
    }
    edge += c.dropAfterRate;
    if (r < edge) {
      return { kind: 'dropAfter' };
    }
    edge += c.rate429;
    if (r < edge) {
      return this.statusFault(429);
    }
    edge += c.rate503;
    if (r < edge) {
      return this.statusFault(503);
    }
    edge += c.rate412;
    if (r < edge && request.ifMatch) {
      return this.statusFault(412);
    }
    return null;
  }

  statusFault(status) {
    const fault = { kind: 'status', status };
    if (this.config.retryAfter !== undefined && (status === 429 || status === 503)) {
      fault.retryAfter = this.config.retryAfter;
    }
    return fault;
  }
}
