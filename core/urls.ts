/**
 * What kind of location a user gave: every option that accepts a path or a URL asks here,
 * so `--model`, `--data`, `dataset.url` and `--db` agree on what a URL is.
 */

/** Any `scheme://` (RFC 3986 scheme, any case): the value is a URL, not a path. */
export const hasUrlScheme = (value: string): boolean => /^[a-z][a-z0-9+.-]*:\/\//i.test(value);

/** http:// or https:// (any case): something to download. */
export const isHttpUrl = (value: string): boolean => /^https?:\/\//i.test(value);

/** postgres:// or postgresql:// (any case), as libpq accepts: a PostgreSQL server instead of a SQLite file. */
export const isPostgresUrl = (value: string): boolean => /^postgres(ql)?:\/\//i.test(value);

/** A URL with its password (if any) replaced by ***, for anything printed. */
export const redact = (url: string): string => url.replace(/^([a-z]+:\/\/[^:/@]*:)[^@]*@/i, '$1***@');
