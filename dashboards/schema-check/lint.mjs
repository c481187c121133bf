// Project rules a type cannot express. Exits 1 with one line per problem.
//  - schemaVersion is the one @grafana/schema writes (its defaultDashboard);
//  - uid matches the file name, both dashboards link to each other, no __inputs;
//  - every panel has a description, a unique id, a gridPos inside the 24 columns that overlaps
//    no other panel, and Prometheus queries on the `datasource` variable with unique refIds;
//  - every expr is one line, uses only the variables the end-to-end test substitutes, and
//    matches $node / $namespace with =~ (their All value is .*);
//  - every oomwatch_* metric an expr names is documented in docs/metrics.md;
//  - multi-value variables have includeAll with allValue ".*".
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { defaultDashboard } from '@grafana/schema';

import { DASHBOARDS } from './dashboards.mjs';

const VARIABLES = new Set(['datasource', 'node', 'namespace', '__range', '__rate_interval', '__interval']);

const here = dirname(fileURLToPath(import.meta.url));
const metricsDoc = readFileSync(join(here, '..', '..', 'docs', 'metrics.md'), 'utf8');
const documented = new Set(metricsDoc.match(/\boomwatch_[a-z0-9_]+/g) ?? []);

const problems = [];
const report = (where, msg) => problems.push(`${where}: ${msg}`);

for (const name of DASHBOARDS) {
  const d = JSON.parse(readFileSync(join(here, '..', `${name}.json`), 'utf8'));
  const other = DASHBOARDS.find((n) => n !== name);
  const at = name;

  if (d.uid !== name) report(at, `uid is ${d.uid}, expected ${name}`);
  if (d.schemaVersion !== defaultDashboard.schemaVersion) {
    report(at, `schemaVersion ${d.schemaVersion}, @grafana/schema writes ${defaultDashboard.schemaVersion}`);
  }
  if ('__inputs' in d || '__requires' in d) report(at, 'has __inputs/__requires: use the datasource variable');
  if (!(d.links ?? []).some((l) => typeof l.url === 'string' && l.url.startsWith(`/d/${other}/`))) {
    report(at, `no dashboard link to ${other}`);
  }
  if (!(d.tags ?? []).includes('oomwatch')) report(at, 'tag oomwatch missing');

  const vars = new Map((d.templating?.list ?? []).map((v) => [v.name, v]));
  for (const v of vars.values()) {
    if (v.multi && !(v.includeAll && v.allValue === '.*')) {
      report(`${at} $${v.name}`, 'multi-value variable needs includeAll and allValue ".*"');
    }
  }
  if (vars.get('datasource')?.type !== 'datasource' || vars.get('datasource')?.query !== 'prometheus') {
    report(at, 'needs a datasource variable of type prometheus');
  }

  const ids = new Set();
  const cells = new Map();
  for (const p of d.panels ?? []) {
    const pat = `${at} panel ${p.id} "${p.title}"`;
    if (ids.has(p.id)) report(pat, 'duplicate id');
    ids.add(p.id);
    if (!p.description?.trim()) report(pat, 'no description');
    const g = p.gridPos;
    if (!g || g.x < 0 || g.w < 1 || g.x + g.w > 24 || g.h < 1 || g.y < 0) report(pat, 'gridPos outside the grid');
    else {
      const overlapped = new Set();
      for (let x = g.x; x < g.x + g.w; x++) {
        for (let y = g.y; y < g.y + g.h; y++) {
          const k = `${x},${y}`;
          if (cells.has(k)) overlapped.add(cells.get(k));
          cells.set(k, p.id);
        }
      }
      for (const o of overlapped) report(pat, `overlaps panel ${o}`);
    }
    if (p.datasource?.type !== 'prometheus' || p.datasource?.uid !== '${datasource}') {
      report(pat, 'panel datasource is not {"type":"prometheus","uid":"${datasource}"}');
    }
    if (!p.targets?.length) report(pat, 'no targets');
    const refs = new Set();
    for (const t of p.targets ?? []) {
      const tat = `${pat} ${t.refId}`;
      if (refs.has(t.refId)) report(tat, 'duplicate refId');
      refs.add(t.refId);
      if (t.datasource?.type !== 'prometheus' || t.datasource?.uid !== '${datasource}') {
        report(tat, 'target datasource is not the datasource variable');
      }
      const e = t.expr;
      if (typeof e !== 'string' || !e.trim()) { report(tat, 'no expr'); continue; }
      if (/[\n\r]/.test(e)) report(tat, 'expr spans lines');
      for (const m of e.matchAll(/\$\{?(\w+)/g)) {
        if (/^\d+$/.test(m[1])) continue; // $1 in label_replace
        if (!VARIABLES.has(m[1])) report(tat, `uses $${m[1]}, not one of ${[...VARIABLES].join(', ')}`);
        else if (!m[1].startsWith('__') && !vars.has(m[1])) report(tat, `uses $${m[1]}, not a variable here`);
      }
      if (/(node|namespace)\s*(=|!=)\s*"\$/.test(e)) report(tat, 'match $node/$namespace with =~ (All is .*)');
      for (const metric of new Set(e.match(/\boomwatch_[a-z0-9_]+/g) ?? [])) {
        if (!documented.has(metric)) report(tat, `${metric} is not in docs/metrics.md`);
      }
      let depth = 0;
      for (const c of e) {
        depth += '([{'.includes(c) ? 1 : ')]}'.includes(c) ? -1 : 0;
        if (depth < 0) break;
      }
      if (depth !== 0) report(tat, 'unbalanced brackets');
    }
  }
}

if (problems.length) {
  for (const p of problems) console.error(p);
  console.error(`${problems.length} problem(s)`);
  process.exit(1);
}
console.log(`lint: ${DASHBOARDS.length} dashboards ok`);
