// ui/ — the dashboard page, its charts and the Grafana dashboard, embedded in the binary as assets.
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
// Files the binary embeds as text (imported `with { type: "text" }`).
declare module "*.asset.js" {
  const text: string;
  export default text;
}
declare module "*.asset.html" {
  const text: string;
  export default text;
}
declare module "uplot/dist/uPlot.iife.min.js" {
  const text: string;
  export default text;
}
declare module "uplot/dist/uPlot.min.css" {
  const text: string;
  export default text;
}
