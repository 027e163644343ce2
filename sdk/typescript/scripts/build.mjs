// Builds the package twice from src/: ES modules into dist/ and CommonJS into dist/cjs/ (marked by its own
// package.json {"type": "commonjs"}, since the package itself is "type": "module"), each with its .d.ts.
// Runs on `npm run build`, `npm test` and `npm pack` (prepack), so a packed tarball always holds a fresh dist/.
import { execFileSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const tsc = join(root, "node_modules", "typescript", "bin", "tsc");

rmSync(join(root, "dist"), { recursive: true, force: true }); // no stale files from renamed sources
for (const project of ["tsconfig.json", "tsconfig.cjs.json"]) {
  execFileSync(process.execPath, [tsc, "-p", join(root, project)], { stdio: "inherit", cwd: root });
}
writeFileSync(join(root, "dist", "cjs", "package.json"), '{\n  "type": "commonjs"\n}\n');
