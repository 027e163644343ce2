// CSS imports are bundled by esbuild (web/build.mjs) into page.css.
declare module "*.css";
