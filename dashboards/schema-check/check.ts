// Type-checks both dashboards against @grafana/schema's Dashboard type. Run `./check.sh`
// (or `npm run check`), which first writes generated/*.ts with generate.mjs.
import type { Dashboard } from '@grafana/schema';

import nodeJson from '../oomwatch-node.json' with { type: 'json' };
import overviewJson from '../oomwatch-overview.json' with { type: 'json' };
import * as node from './generated/oomwatch-node.js';
import * as overview from './generated/oomwatch-overview.js';
import type { Json, OomwatchDashboard, SchemaDashboard } from './types.js';

type Assert<T extends true> = T;

// 1. The project's stricter type only narrows @grafana/schema's Dashboard.
export type ProjectTypeWithinSchema = Assert<OomwatchDashboard extends Json<Dashboard> ? true : false>;

// 2. The dashboards as object literals (generated/*.ts), typed as Dashboard and as
//    OomwatchDashboard where they are declared: unknown fields, wrong value types, missing
//    required fields and values outside Grafana's enums all fail there.
export const typed: SchemaDashboard[] = [overview.schema, node.schema, overview.project, node.project];

// 3. The JSON files themselves, as `resolveJsonModule` types them. JSON imports widen every
//    string, so enums are compared as plain strings here; names, nesting and the other value
//    types are still checked.
type Widen<T> = T extends string
  ? string
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Widen<U>>
      : T extends object
        ? { [K in keyof T]: Widen<T[K]> }
        : T;

export const imported: Widen<SchemaDashboard>[] = [overviewJson, nodeJson];
