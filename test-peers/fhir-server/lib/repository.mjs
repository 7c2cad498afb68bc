// Medplum's MemoryRepository with what a test FHIR server needs on top:
//   * R4 validation (`validateResource`) of every resource written, batch entries included;
//   * versionIds 1, 2, 3, ... per resource (Medplum's are UUIDs; real servers count, and the
//     connector's FHIRResourceContention metric looks for versionId "2");
//   * the identifier index (lib/identifiers.mjs) for `identifier=` searches;
//   * a default and maximum page size for searches;
//   * undo on failure for transaction bundles (MemoryRepository does not roll back);
//   * history reads that do not reorder the stored history (MemoryRepository reverses it in place).
//
// Concurrency: every method completes without waiting on I/O (only promise microtasks), so one
// HTTP request's repository work, a whole transaction included, runs before the next request's.

import {
  Operator,
  deepClone,
  globalSchema,
  matchesSearchRequest,
  validateResource,
} from '@medplum/core';
import { MemoryRepository } from '@medplum/fhir-router';
import { IdentifierIndex } from './identifiers.mjs';

/** A MemoryRepository with validation, counted versions, an identifier index and paging limits. */
export class TestRepository extends MemoryRepository {
  /**
   * @param {{ pageSize: number, maxPageSize: number, caseInsensitive?: boolean, maxLength?: number, validate?: boolean }} options
   */
  constructor(options) {
    super();
    this.validate = options.validate ?? true;
    this.pageSize = options.pageSize;
    this.maxPageSize = options.maxPageSize;
    this.index = new IdentifierIndex({ caseInsensitive: options.caseInsensitive, maxLength: options.maxLength });
    /** @type {Map<string, number>} "Type/id" → creation sequence, for stable result order */
    this.sequence = new Map();
    this.nextSequence = 0;
    /** @type {Map<string, boolean>} resource type → whether its identifier param is Type.identifier */
    this.indexable = new Map();
    /** Undo log of the running transaction, if any. */
    this.journal = undefined;
  }

  clear() {
    super.clear();
    this.index.clear();
    this.sequence.clear();
    this.nextSequence = 0;
  }

  /** Number of stored resources (current versions). */
  size() {
    let n = 0;
    for (const byId of this.resources.values()) {
      n += byId.size;
    }
    return n;
  }

  /** Whether a current version of Type/id exists. */
  exists(resourceType, id) {
    return Boolean(this.resources.get(resourceType)?.has(id));
  }

  async createResource(resource) {
    if (this.validate) {
      // Throws OperationOutcomeError (400) listing every error found.
      validateResource(resource);
    }
    const { resourceType } = resource;
    const id = resource.id ?? this.generateId();
    const historyLength = this.history.get(resourceType)?.get(id)?.length ?? 0;
    const previous = this.resources.get(resourceType)?.get(id);
    this.journal?.push({ resourceType, id, previous, historyLength });
    const stored = {
      ...resource,
      id,
      meta: { ...resource.meta, versionId: String(historyLength + 1), lastUpdated: new Date().toISOString() },
    };
    const result = await super.createResource(stored);
    this.index.set(resourceType, id, result.identifier);
    const key = `${resourceType}/${id}`;
    if (!this.sequence.has(key)) {
      this.sequence.set(key, this.nextSequence++);
    }
    return result;
  }

  async deleteResource(resourceType, id) {
    const previous = this.resources.get(resourceType)?.get(id);
    await super.deleteResource(resourceType, id);
    this.journal?.push({
      resourceType,
      id,
      previous,
      historyLength: this.history.get(resourceType)?.get(id)?.length ?? 0,
    });
    this.index.remove(resourceType, id);
    this.sequence.delete(`${resourceType}/${id}`);
  }

  async readHistory(resourceType, id) {
    await this.readResource(resourceType, id);
    const versions = this.history.get(resourceType)?.get(id) ?? [];
    const entry = [];
    for (let i = versions.length - 1; i >= 0; i--) {
      entry.push({ resource: deepClone(versions[i]) });
    }
    return { resourceType: 'Bundle', type: 'history', ...(entry.length ? { entry } : undefined) };
  }

  async withTransaction(callback) {
    if (this.journal) {
      return callback(undefined);
    }
    this.journal = [];
    try {
      const result = await callback(undefined);
      this.journal = undefined;
      return result;
    } catch (err) {
      const journal = this.journal;
      this.journal = undefined;
      this.rollback(journal);
      throw err;
    }
  }

  rollback(journal) {
    for (let i = journal.length - 1; i >= 0; i--) {
      const { resourceType, id, previous, historyLength } = journal[i];
      const byId = this.resources.get(resourceType);
      if (previous) {
        byId?.set(id, previous);
        this.index.set(resourceType, id, previous.identifier);
      } else {
        byId?.delete(id);
        this.index.remove(resourceType, id);
        this.sequence.delete(`${resourceType}/${id}`);
      }
      const versions = this.history.get(resourceType)?.get(id);
      if (versions) {
        versions.length = historyLength;
      }
    }
  }

  /** Whether `identifier=` on this type searches exactly `Type.identifier`. */
  isIndexable(resourceType) {
    let known = this.indexable.get(resourceType);
    if (known === undefined) {
      const expression = globalSchema.types[resourceType]?.searchParams?.identifier?.expression ?? '';
      const own = expression
        .split('|')
        .map((s) => s.trim())
        .filter((s) => s.startsWith(`${resourceType}.`));
      known = own.length === 1 && own[0] === `${resourceType}.identifier`;
      this.indexable.set(resourceType, known);
    }
    return known;
  }

  async search(searchRequest) {
    if (searchRequest.count === undefined || Number.isNaN(searchRequest.count) || searchRequest.count < 0) {
      searchRequest.count = this.pageSize;
    } else if (searchRequest.count > this.maxPageSize) {
      searchRequest.count = this.maxPageSize;
    }
    if (searchRequest.offset !== undefined && (Number.isNaN(searchRequest.offset) || searchRequest.offset < 0)) {
      searchRequest.offset = 0;
    }
    const filters = searchRequest.filters ?? [];
    if (
      !filters.some((f) => f.code === 'identifier' && f.operator === Operator.EQUALS) ||
      searchRequest.types ||
      searchRequest.include ||
      searchRequest.revInclude ||
      searchRequest.sortRules?.length ||
      !this.isIndexable(searchRequest.resourceType)
    ) {
      return super.search(searchRequest);
    }
    const { resourceType } = searchRequest;
    // Every `identifier=` parameter is answered by the index (several are ANDed); the other
    // parameters are checked with Medplum's matcher on the few candidates left.
    const isIdentifier = (f) => f.code === 'identifier' && f.operator === Operator.EQUALS;
    const rest = filters.filter((f) => !isIdentifier(f));
    let ids;
    for (const filter of filters.filter(isIdentifier)) {
      const found = this.index.lookup(resourceType, filter.value);
      ids = ids === undefined ? [...found] : ids.filter((id) => found.has(id));
    }
    ids.sort((a, b) => (this.sequence.get(`${resourceType}/${a}`) ?? 0) - (this.sequence.get(`${resourceType}/${b}`) ?? 0));
    const byId = this.resources.get(resourceType);
    const matches = [];
    for (const id of ids) {
      const resource = byId?.get(id);
      if (resource && (rest.length === 0 || matchesSearchRequest(resource, { resourceType, filters: rest }))) {
        matches.push(resource);
      }
    }
    const offset = searchRequest.offset ?? 0;
    const page = matches.slice(offset, offset + searchRequest.count);
    return {
      resourceType: 'Bundle',
      type: 'searchset',
      entry: page.length ? page.map((resource) => ({ resource: deepClone(resource) })) : undefined,
      total: matches.length,
    };
  }
}
