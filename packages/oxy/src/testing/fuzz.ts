/**
 * Seeded random numbers for fuzz tests: the same seed gives the same cases, so a failure names a
 * case that can be replayed (every fuzz test here reads its seed from an environment variable and
 * prints it). Two generators, both tiny and fast; neither is for anything but tests.
 */

/** xorshift32 (Marsaglia): a generator of unsigned 32-bit integers. A zero seed counts as 1. */
export function randomUint32(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** mulberry32: a generator of floats in [0, 1). */
export function randomFloat(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
