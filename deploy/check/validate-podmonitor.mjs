// PodMonitor validation for `cargo xtask deploy` (deploy/check/src/lib.rs): each stdin line is a
// PodMonitor as JSON; the types of @kubernetes-models/prometheus-operator (generated from the
// prometheus-operator CRDs) validate it. Prints `ok NAME` or `invalid NAME: why`; exit 1 if any
// is invalid. deploy/check/src/render.rs copies this file next to the npm install it makes.
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { readFileSync } from "node:fs";
let bad = 0;
for (const line of readFileSync(0, "utf8").split("\n")) {
  if (!line.trim()) continue;
  const obj = JSON.parse(line);
  const name = obj.metadata && obj.metadata.name;
  try {
    new PodMonitor(obj).validate();
    console.log(`ok ${name}`);
  } catch (e) {
    bad++;
    console.log(`invalid ${name}: ${e.message}`);
  }
}
process.exit(bad ? 1 : 0);
