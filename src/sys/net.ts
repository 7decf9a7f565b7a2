/** Addresses: whether a host is this machine. */

/** True for 127.0.0.0/8, ::1 (bracketed or not) and localhost: only this machine reaches it. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, "$1");
  return /^127\.\d+\.\d+\.\d+$/.test(h) || h === "::1" || h === "localhost";
}
