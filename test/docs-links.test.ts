/**
 * Every relative link in the README and docs/ leads somewhere: the file exists, and a `#fragment`
 * into a Markdown page names one of its headings as GitHub makes their anchors (lower case,
 * punctuation dropped, spaces to hyphens, `-1`, `-2` for repeats) or an `<a id>`.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

const ROOT = path.join(import.meta.dirname, '..');

/** Fenced code is not Markdown: links and headings inside it do not count. */
function withoutFences(text: string): string {
  return text.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '');
}

/** GitHub's anchor for a heading's text. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\p{M}_\- ]/gu, '')
    .replace(/ /g, '-');
}

const anchorCache = new Map<string, Set<string>>();

function anchorsOf(file: string): Set<string> {
  let found = anchorCache.get(file);
  if (found) return found;
  found = new Set();
  const seen = new Map<string, number>();
  const text = withoutFences(fs.readFileSync(file, 'utf8'));
  for (const m of text.matchAll(/^#{1,6}\s+(.*?)\s*#*\s*$/gm)) {
    const base = slug(m[1] as string);
    const n = seen.get(base);
    seen.set(base, (n ?? -1) + 1);
    found.add(n === undefined ? base : `${base}-${n + 1}`);
  }
  for (const m of text.matchAll(/<a\s+(?:id|name)="([^"]+)"/g)) found.add(m[1] as string);
  anchorCache.set(file, found);
  return found;
}

test('slug follows GitHub', () => {
  assert.equal(slug('`--check`'), '--check');
  assert.equal(slug('7.6 The IP→TCP upgrade contract'), '76-the-iptcp-upgrade-contract');
  assert.equal(
    slug('State across a restart (`AppLifecycleHook.stateForRestart`)'),
    'state-across-a-restart-applifecyclehookstateforrestart',
  );
  assert.equal(slug('tcp_smart_accept and Nagle'), 'tcp_smart_accept-and-nagle');
});

test('README.md and docs/*.md link only to files and headings that exist', () => {
  const pages = [
    'README.md',
    ...fs
      .readdirSync(path.join(ROOT, 'docs'))
      .filter((f) => f.endsWith('.md'))
      .map((f) => `docs/${f}`),
  ];
  const broken: string[] = [];
  for (const page of pages) {
    const file = path.join(ROOT, page);
    const text = withoutFences(fs.readFileSync(file, 'utf8')).replace(/`[^`\n]*`/g, '');
    for (const m of text.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
      const link = m[1] as string;
      if (/^[a-z][a-z0-9+.-]*:/i.test(link)) continue; // https:, mailto:
      const [target = '', fragment] = link.split('#', 2);
      const dest = target === '' ? file : path.resolve(path.dirname(file), decodeURI(target));
      if (!fs.existsSync(dest)) broken.push(`${page}: ${link} (no such file)`);
      else if (fragment && dest.endsWith('.md') && !anchorsOf(dest).has(decodeURIComponent(fragment)))
        broken.push(`${page}: ${link} (no such heading)`);
    }
  }
  assert.deepEqual(broken, []);
});
