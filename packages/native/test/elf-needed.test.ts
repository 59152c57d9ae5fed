/**
 * The built addon links nothing but libc: a fresh machine with a C toolchain builds and loads
 * it without any -dev package or extra shared library (no libseccomp, no libpthread, and no
 * dynamic-loader symbols such as __tls_get_addr). Reads the ELF's DT_NEEDED entries directly,
 * so the test needs no binutils.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const addonPath = fileURLToPath(new URL('../build/Release/oxy_native.node', import.meta.url));

/** The DT_NEEDED names of a 64-bit little-endian ELF shared object, via its section headers. */
function neededLibraries(elf: Buffer): string[] {
  assert.equal(elf.toString('latin1', 0, 4), '\x7fELF', 'not an ELF file');
  assert.equal(elf[4], 2, 'expected a 64-bit ELF');
  assert.equal(elf[5], 1, 'expected a little-endian ELF');
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const section = (i: number) => {
    const at = shoff + i * shentsize;
    return {
      type: elf.readUInt32LE(at + 4),
      offset: Number(elf.readBigUInt64LE(at + 0x18)),
      size: Number(elf.readBigUInt64LE(at + 0x20)),
      link: elf.readUInt32LE(at + 0x28),
    };
  };
  const SHT_DYNAMIC = 6;
  const DT_NULL = 0n;
  const DT_NEEDED = 1n;
  const out: string[] = [];
  for (let i = 0; i < shnum; i++) {
    const dyn = section(i);
    if (dyn.type !== SHT_DYNAMIC) continue;
    const strtab = section(dyn.link);
    for (let at = dyn.offset; at + 16 <= dyn.offset + dyn.size; at += 16) {
      const tag = elf.readBigInt64LE(at);
      if (tag === DT_NULL) break;
      if (tag !== DT_NEEDED) continue;
      const start = strtab.offset + Number(elf.readBigUInt64LE(at + 8));
      out.push(elf.toString('latin1', start, elf.indexOf(0, start)));
    }
  }
  return out;
}

test('the addon ELF needs only libc', () => {
  const needed = neededLibraries(readFileSync(addonPath));
  assert.ok(needed.length > 0, 'a dynamic object names at least libc');
  assert.deepEqual(
    needed.filter((n) => !/^libc\.so\.\d+$/.test(n)),
    [],
    `DT_NEEDED: ${needed.join(', ')}`,
  );
});

test('the ELF reader finds every DT_NEEDED of a binary with several (node itself)', () => {
  const needed = neededLibraries(readFileSync(process.execPath));
  assert.ok(
    needed.some((n) => n.startsWith('libc.so')),
    needed.join(', '),
  );
  assert.ok(needed.length >= 3, needed.join(', '));
});
