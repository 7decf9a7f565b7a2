/** Secrets kept out of what cicada prints: URLs lose their password before they reach a message, a log or a report. */

/** The URL with its password (if any) replaced by `***`; unparsable text loses whatever sits between `:` and `@`. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url.replace(/:[^:@/]*@/, ":***@");
  }
}

/** Text with the password of every URL in it (`scheme://user:password@`) replaced by `***`: for messages that quote a URL. */
export function redactText(text: string): string {
  return text.replace(/(\/\/[^/:@\s]*):[^@\s/]*@/g, "$1:***@");
}
