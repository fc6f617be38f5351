import { createServer } from 'node:http';

/** Floor: bare node:http answering a small JSON. Env: PORT. */
const body = JSON.stringify({ ok: true, service: 'bench' });
createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}).listen(Number(process.env.PORT), '127.0.0.1');
