/**
 * Whom the SDK talks to (#11 item 6, docs/security.md). The Python client checks the server's uid with
 * SO_PEERCRED; Node exposes no peer credentials on a Unix socket, so the SDK checks the filesystem instead: the
 * socket file and its directory must belong to us (or root), and the directory must not be writable by others
 * (unless sticky, as /tmp: then nobody else can replace our socket in it). A socket file in a directory only we or
 * root can write to can only have been bound by us or root, so whoever listens there is us or root.
 *
 * The limit: this proves who created the socket file, not who holds it now; a process of ours that hands its
 * listening fd to another user, or root acting for another user, is not detected. SO_PEERCRED would be.
 */
import { realpathSync, statSync } from "node:fs";
import { dirname } from "node:path";

import { PtyDaemonError } from "./errors.js";

/** Throws PtyDaemonError `untrusted_server` when the socket at `path` may belong to another user; a missing socket
 * passes (connecting to it then fails as usual). */
export function checkSocketTrust(path: string, uid: number | undefined = process.getuid?.()): void {
  if (uid === undefined) return; // no uids on this platform
  let real: string;
  try {
    real = realpathSync(path);
  } catch {
    return;
  }
  const refuse = (why: string) => {
    throw new PtyDaemonError(
      "untrusted_server",
      `refusing the daemon socket ${path}: ${why}; another user may have created it to read what is typed into it`,
    );
  };
  const owned = (u: number) => u === uid || u === 0;
  const sock = statSync(real);
  if (!owned(sock.uid)) refuse(`it belongs to uid ${sock.uid}, not to uid ${uid} or root`);
  const dir = dirname(real);
  const d = statSync(dir);
  if (!owned(d.uid)) refuse(`its directory ${dir} belongs to uid ${d.uid}, not to uid ${uid} or root`);
  if ((d.mode & 0o022) !== 0 && (d.mode & 0o1000) === 0) {
    refuse(`its directory ${dir} (mode ${(d.mode & 0o7777).toString(8)}) is writable by other users`);
  }
}
