// Types the dashboards are checked against. Everything derives from @grafana/schema; the only
// adaptation is Json<T>, which spells TypeScript enums the way JSON holds them.
import type { Dashboard, FieldConfig, FieldConfigSource, GridPos, Panel, VariableModel } from '@grafana/schema';
import type * as BarGauge from '@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen';
import type * as Stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as Table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type * as TimeSeries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';

/**
 * The JSON form of T. @grafana/schema declares closed string sets as TypeScript enums
 * (ThresholdsMode, FieldColorModeId, MappingType, ...), and a string literal such as "absolute"
 * is not assignable to an enum type. Json<T> replaces every string enum by the union of its
 * values ("absolute" | "percentage"), and leaves everything else as it is: property names,
 * optionality, numbers (numeric enums accept their numbers), arrays and nesting.
 */
export type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

/** @grafana/schema's Dashboard, as JSON. */
export type SchemaDashboard = Json<Dashboard>;

// ---------------------------------------------------------------------------------------------
// The project's own, stricter rules. check.ts proves OomwatchDashboard is a subtype of
// SchemaDashboard, so these only ever narrow what @grafana/schema allows.

/** The one datasource reference allowed: the dashboard's `datasource` variable, no fixed uid. */
export type PrometheusRef = { type: 'prometheus'; uid: '${datasource}' };

/** A Prometheus query (the fields of Grafana's Prometheus dataquery that these dashboards use). */
export type PrometheusTarget = {
  datasource: PrometheusRef;
  editorMode?: 'code' | 'builder';
  exemplar?: boolean;
  expr: string;
  format?: 'time_series' | 'table' | 'heatmap';
  hide?: boolean;
  instant?: boolean;
  interval?: string;
  legendFormat?: string;
  range?: boolean;
  refId: string;
};

/** A panel's fieldConfig whose `custom` part is the panel plugin's own field config type. */
type FieldConfigOf<Custom> = Omit<Json<FieldConfigSource>, 'defaults'> & {
  defaults: Omit<Json<FieldConfig>, 'custom'> & { custom?: Json<Partial<Custom>> };
};

type NoCustom = Record<string, never>;

/** Fields every panel must have here: a description, a stable id, a place, Prometheus queries. */
type PanelCommon = Omit<
  Json<Panel>,
  'type' | 'options' | 'fieldConfig' | 'targets' | 'datasource' | 'description' | 'id' | 'gridPos' | 'title'
> & {
  datasource: PrometheusRef;
  description: string;
  gridPos: Json<GridPos>;
  id: number;
  targets: PrometheusTarget[];
  title: string;
};

/** A panel whose options and field config are checked against the plugin's schema. */
type PanelOf<Type extends string, Options, Custom> = PanelCommon & {
  type: Type;
  options: Json<Options>;
  fieldConfig: FieldConfigOf<Custom>;
};

export type OomwatchPanel =
  | PanelOf<'timeseries', TimeSeries.Options, TimeSeries.FieldConfig>
  | PanelOf<'stat', Stat.Options, NoCustom>
  | PanelOf<'bargauge', BarGauge.Options, NoCustom>
  | PanelOf<'table', Table.Options, Table.FieldConfig>;

/** A template variable; a query variable must query the `datasource` variable's Prometheus. */
export type OomwatchVariable = Omit<Json<VariableModel>, 'datasource' | 'description'> & {
  datasource?: PrometheusRef;
  description: string;
};

export type OomwatchDashboard = Omit<
  SchemaDashboard,
  'panels' | 'uid' | 'title' | 'description' | 'tags' | 'refresh' | 'time' | 'templating' | 'links'
> & {
  uid: 'oomwatch-overview' | 'oomwatch-node';
  title: string;
  description: string;
  tags: string[];
  refresh: '30s';
  time: { from: 'now-6h'; to: 'now' };
  links: NonNullable<SchemaDashboard['links']>;
  templating: { list: OomwatchVariable[] };
  panels: OomwatchPanel[];
};
