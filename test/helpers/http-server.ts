/**
 * A misbehaving HTTP server on 127.0.0.1 (ephemeral port) for download faults: it can
 * answer 404 or HTML, cut the connection after N bytes (with or without Content-Length),
 * serve wrong bytes, or trickle slowly so a client can be killed mid-download.
 */
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Route {
  status?: number;
  type?: string;
  body: Buffer;
  /** Send only this many bytes of the body, then destroy the socket. */
  cutAfter?: number;
  /** Omit Content-Length (chunked transfer), so only the transfer encoding can tell a cut. */
  noLength?: boolean;
  /** Send the body in 1 KiB pieces this many ms apart. */
  trickleMs?: number;
}

export interface FaultServer {
  readonly url: (path: string) => string;
  /** Requests per path. */
  readonly hits: Map<string, number>;
  /** Routes can be swapped between requests (fault first, then the good file). */
  readonly routes: Record<string, Route>;
  close(): Promise<void>;
}

export async function faultServer(routes: Record<string, Route>): Promise<FaultServer> {
  const hits = new Map<string, number>();
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url!, 'http://x').pathname;
    hits.set(path, (hits.get(path) ?? 0) + 1);
    const route = routes[path];
    if (!route) {
      res.writeHead(404, { 'Content-Type': 'text/html' });
      res.end('<!doctype html><html><body><h1>404 Not Found</h1></body></html>');
      return;
    }
    const headers: Record<string, string | number> = { 'Content-Type': route.type ?? 'application/octet-stream' };
    if (!route.noLength) headers['Content-Length'] = route.body.length;
    res.writeHead(route.status ?? 200, headers);
    const body = route.cutAfter === undefined ? route.body : route.body.subarray(0, route.cutAfter);
    const finish = () => (route.cutAfter === undefined ? res.end() : setTimeout(() => res.socket?.destroy(), 20));
    if (route.trickleMs) {
      let offset = 0;
      const timer = setInterval(() => {
        if (res.destroyed || offset >= body.length) {
          clearInterval(timer);
          if (!res.destroyed) finish();
          return;
        }
        res.write(body.subarray(offset, offset + 1024));
        offset += 1024;
      }, route.trickleMs);
      res.on('close', () => clearInterval(timer));
      return;
    }
    res.write(body, () => finish());
  });
  await new Promise<void>((ready) => server.listen(0, '127.0.0.1', ready));
  const { port } = server.address() as AddressInfo;
  return {
    url: (path) => `http://127.0.0.1:${port}${path}`,
    hits,
    routes,
    close: () =>
      new Promise<void>((closed) => {
        server.closeAllConnections();
        server.close(() => closed());
      }),
  };
}
