/** The password-file reader pg itself uses (no published types). */
declare module 'pgpass' {
  interface ConnectionInfo {
    host?: string;
    port?: number | string;
    database?: string;
    user?: string;
  }
  export default function pgpass(info: ConnectionInfo, callback: (password: string | undefined) => void): void;
}
