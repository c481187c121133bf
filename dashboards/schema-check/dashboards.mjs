// The dashboards the check covers: dashboards/<name>.json, each with uid <name>.
export const DASHBOARDS = ['oomwatch-overview', 'oomwatch-node'];
