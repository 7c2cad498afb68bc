// Identifier search: parsing FHIR token values and an in-memory index over Identifier.system/value.
//
// Why: the stock MemoryRepository search evaluates a FHIRPath expression against every stored
// resource of the type (~0.8 ms each: 1.7 s for one search at 2,000 resources). The connector
// searches Device, Patient, Encounter and Observation by identifier on every cache miss, so the
// wrapper keeps this index and answers those searches in microseconds.
//
// Semantics (FHIR R4 search, token parameters, http://hl7.org/fhir/R4/search.html#token):
//   identifier=value          any identifier whose value matches, whatever its system
//   identifier=system|value   an identifier with exactly that system and value
//   identifier=|value         an identifier with that value and no system
//   identifier=system|        any identifier with that system
//   a,b                       either (comma = OR); `\,` `\|` `\\` escape the separators
// Matching is exact and case-sensitive by default, as FHIR defines for identifiers. Two options
// emulate looser servers so clients' own exact-match filtering can be exercised:
// `caseInsensitive` (Medplum's and SQL-collation servers' behaviour) and `maxLength` (servers that
// index only a prefix of long values, e.g. 128 characters).

/**
 * A parsed token search value.
 * @typedef {{ system: string | undefined, value: string | undefined }} TokenValue
 * `system === undefined`: any system; `system === ''`: no system. `value === undefined`: any value.
 */

/**
 * Splits a token search parameter value into its comma-separated alternatives, each split at
 * the first unescaped `|`, with FHIR search escapes (`\,` `\|` `\$` `\\`) removed.
 *
 * Values without a backslash (nearly all) are cut with `indexOf` and `slice`, so each part is
 * one flat string; building them a character at a time made deep string ropes that cost more
 * to hash in the index than the rest of the search.
 * @param {string} raw the decoded parameter value
 * @returns {TokenValue[]}
 */
export function parseTokenValues(raw) {
  if (raw.includes('\\')) {
    return parseEscapedTokenValues(raw);
  }
  const out = [];
  let start = 0;
  for (;;) {
    let end = raw.indexOf(',', start);
    if (end < 0) {
      end = raw.length;
    }
    const bar = raw.indexOf('|', start);
    if (bar < 0 || bar >= end) {
      out.push({ system: undefined, value: raw.slice(start, end) });
    } else {
      out.push(finishToken(true, raw.slice(start, bar), raw.slice(bar + 1, end)));
    }
    if (end === raw.length) {
      return out;
    }
    start = end + 1;
  }
}

/** {@link parseTokenValues} for values with escapes: one character at a time. */
function parseEscapedTokenValues(raw) {
  const out = [];
  let system;
  let current = '';
  let sawBar = false;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (c === '\\' && i + 1 < raw.length) {
      current += raw[++i];
    } else if (c === '|' && !sawBar) {
      system = current;
      current = '';
      sawBar = true;
    } else if (c === ',') {
      out.push(finishToken(sawBar, system, current));
      system = undefined;
      current = '';
      sawBar = false;
    } else {
      current += c;
    }
  }
  out.push(finishToken(sawBar, system, current));
  return out;
}

function finishToken(sawBar, system, current) {
  if (!sawBar) {
    return { system: undefined, value: current };
  }
  return { system, value: current === '' ? undefined : current };
}

/**
 * Identifiers of a resource as the index sees them: `[system, value]` pairs, normalized.
 * @param {unknown} identifier `resource.identifier` (an array, a single Identifier, or absent)
 * @param {(s: string) => string} normValue
 * @param {(s: string) => string} normSystem
 * @returns {Array<[string | undefined, string | undefined]>}
 */
export function identifierPairs(identifier, normValue, normSystem) {
  if (identifier === undefined || identifier === null) {
    return [];
  }
  const list = Array.isArray(identifier) ? identifier : [identifier];
  const pairs = [];
  for (const ident of list) {
    if (!ident || typeof ident !== 'object') {
      continue;
    }
    const system = typeof ident.system === 'string' && ident.system !== '' ? normSystem(ident.system) : undefined;
    const value = typeof ident.value === 'string' && ident.value !== '' ? normValue(ident.value) : undefined;
    if (system !== undefined || value !== undefined) {
      pairs.push([system, value]);
    }
  }
  return pairs;
}

/**
 * Whether one normalized identifier pair matches one normalized token value.
 * @param {[string | undefined, string | undefined]} pair
 * @param {TokenValue} token
 */
export function pairMatches([system, value], token) {
  if (token.system === undefined) {
    return token.value !== undefined && value === token.value;
  }
  if (token.system === '') {
    return system === undefined && token.value !== undefined && value === token.value;
  }
  if (system !== token.system) {
    return false;
  }
  return token.value === undefined || value === token.value;
}

/** Per-resource-type maps from normalized identifier keys to resource ids. */
class TypeIndex {
  constructor() {
    /** @type {Map<string, Array<[string | undefined, string | undefined]>>} id → pairs */
    this.pairs = new Map();
    /** @type {Map<string, Map<string, Set<string>>>} system → value → ids (no joined keys to build) */
    this.exact = new Map();
    /** @type {Map<string, Set<string>>} value → ids */
    this.byValue = new Map();
    /** @type {Map<string, Set<string>>} system → ids */
    this.bySystem = new Map();
  }
}

function addTo(map, key, id) {
  let set = map.get(key);
  if (!set) {
    set = new Set();
    map.set(key, set);
  }
  set.add(id);
}

function addToExact(exact, system, value, id) {
  let byValue = exact.get(system);
  if (!byValue) {
    byValue = new Map();
    exact.set(system, byValue);
  }
  addTo(byValue, value, id);
}

function removeFromExact(exact, system, value, id) {
  const byValue = exact.get(system);
  if (byValue) {
    removeFrom(byValue, value, id);
    if (byValue.size === 0) {
      exact.delete(system);
    }
  }
}

function removeFrom(map, key, id) {
  const set = map.get(key);
  if (set) {
    set.delete(id);
    if (set.size === 0) {
      map.delete(key);
    }
  }
}

/** An index from Identifier system/value to resource ids, per resource type. */
export class IdentifierIndex {
  /**
   * @param {{ caseInsensitive?: boolean, maxLength?: number }} [options]
   */
  constructor(options = {}) {
    const ci = Boolean(options.caseInsensitive);
    const max = options.maxLength;
    this.normSystem = ci ? (s) => s.toLowerCase() : (s) => s;
    this.normValue = (s) => {
      let v = ci ? s.toLowerCase() : s;
      if (max !== undefined && v.length > max) {
        v = v.slice(0, max);
      }
      return v;
    };
    /** @type {Map<string, TypeIndex>} */
    this.types = new Map();
  }

  /** Forgets everything. */
  clear() {
    this.types.clear();
  }

  /**
   * Records (or replaces) the identifiers of one resource.
   * @param {string} type
   * @param {string} id
   * @param {unknown} identifier `resource.identifier`
   */
  set(type, id, identifier) {
    this.remove(type, id);
    const pairs = identifierPairs(identifier, this.normValue, this.normSystem);
    if (pairs.length === 0) {
      return;
    }
    let t = this.types.get(type);
    if (!t) {
      t = new TypeIndex();
      this.types.set(type, t);
    }
    t.pairs.set(id, pairs);
    for (const [system, value] of pairs) {
      if (value !== undefined) {
        addTo(t.byValue, value, id);
        if (system !== undefined) {
          addToExact(t.exact, system, value, id);
        }
      }
      if (system !== undefined) {
        addTo(t.bySystem, system, id);
      }
    }
  }

  /**
   * Removes one resource from the index.
   * @param {string} type
   * @param {string} id
   */
  remove(type, id) {
    const t = this.types.get(type);
    const pairs = t?.pairs.get(id);
    if (!t || !pairs) {
      return;
    }
    t.pairs.delete(id);
    for (const [system, value] of pairs) {
      if (value !== undefined) {
        removeFrom(t.byValue, value, id);
        if (system !== undefined) {
          removeFromExact(t.exact, system, value, id);
        }
      }
      if (system !== undefined) {
        removeFrom(t.bySystem, system, id);
      }
    }
  }

  /**
   * Ids of the resources of `type` matching any of the token values of one `identifier=` parameter.
   * @param {string} type
   * @param {string} raw the decoded parameter value
   * @returns {Set<string>}
   */
  lookup(type, raw) {
    const result = new Set();
    const t = this.types.get(type);
    if (!t) {
      return result;
    }
    for (const parsed of parseTokenValues(raw)) {
      const token = {
        system: parsed.system === undefined || parsed.system === '' ? parsed.system : this.normSystem(parsed.system),
        value: parsed.value === undefined ? undefined : this.normValue(parsed.value),
      };
      let candidates;
      if (token.system === undefined || token.system === '') {
        candidates = token.value === undefined ? undefined : t.byValue.get(token.value);
      } else if (token.value === undefined) {
        candidates = t.bySystem.get(token.system);
      } else {
        candidates = t.exact.get(token.system)?.get(token.value);
      }
      if (!candidates) {
        continue;
      }
      for (const id of candidates) {
        if (result.has(id)) {
          continue;
        }
        // Confirm against the stored pairs: this is what makes `|value` (no system) exact.
        const pairs = t.pairs.get(id);
        if (pairs && pairs.some((pair) => pairMatches(pair, token))) {
          result.add(id);
        }
      }
    }
    return result;
  }
}
