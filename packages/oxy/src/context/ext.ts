/**
 * Type erasure of the app's extension state: the app declares ext types and factories with a
 * generic parameter (`ExtTypes`), the framework stores instances as plain `object`s, and the
 * app's hooks receive them typed again. This module holds the one cast that joins the two
 * sides, so no other module carries the app's generics.
 *
 * Ordering rule: factories run once per context, at its creation (`newExt`), so an `ext`
 * object's shape is fixed from birth (fastify). A kind without a factory gets an empty,
 * extensible object, made when a hook first reads `ctx.ext` (so apps that keep no state pay no
 * allocation); the app types such a kind with optional fields only (`{ psk?: boolean }`), since
 * `defineApp` requires a factory for a kind with required fields.
 */
import type { Hooks } from '../hooks/run.ts';
import type { ExtTypes } from './contexts.ts';

/** One factory per context kind the app keeps state for. Each returns a fresh object. */
export type ExtFactories<X extends ExtTypes> = { readonly [K in keyof X]: () => X[K] };

/** The context kinds that carry `ext`. */
export type ExtKind = keyof ExtTypes;

/** The app's factories with the generics erased; `null` where the app keeps no state. */
export interface ErasedExtFactories {
  readonly endpoint: (() => object) | null;
  readonly ingress: (() => object) | null;
  readonly request: (() => object) | null;
  readonly egress: (() => object) | null;
}

/** No factories at all (apps without `ext`, tests). */
export const NO_EXT: ErasedExtFactories = Object.freeze({
  endpoint: null,
  ingress: null,
  request: null,
  egress: null,
});

/** Erases the app's factories, checking that each given one is a function. */
export function eraseExtFactories(ext: object | undefined): ErasedExtFactories {
  if (ext === undefined) return NO_EXT;
  const table = ext as Partial<Record<string, unknown>>;
  const pick = (kind: ExtKind): (() => object) | null => {
    const f = table[kind];
    if (f === undefined) return null;
    if (typeof f !== 'function') throw new TypeError(`ext.${kind} must be a function returning an object`);
    return f as () => object;
  };
  for (const key of Object.keys(table)) {
    if (key !== 'endpoint' && key !== 'ingress' && key !== 'request' && key !== 'egress') {
      throw new TypeError(`ext.${key} is not a context kind (expected endpoint, ingress, request or egress)`);
    }
  }
  return {
    endpoint: pick('endpoint'),
    ingress: pick('ingress'),
    request: pick('request'),
    egress: pick('egress'),
  };
}

/**
 * Builds a context's `ext` with its factory, or `null` when the app has none for that kind
 * (the context then makes an empty object on first read).
 */
export function newExt(factory: (() => object) | null): object | null {
  if (factory === null) return null;
  const ext = factory();
  if (typeof ext !== 'object' || ext === null) throw new TypeError('an ext factory must return an object');
  return ext;
}

/**
 * The one cast: the app's typed hooks become hooks over erased contexts. Sound because every
 * context's `ext` was built by the same app's factory for that kind (see `newExt`).
 */
export function eraseHooks<X extends ExtTypes>(hooks: Hooks<X>): Hooks {
  return hooks as unknown as Hooks;
}
