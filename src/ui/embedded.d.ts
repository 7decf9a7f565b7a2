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
