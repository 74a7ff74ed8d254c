// `/echo` and `/broadcast` on uWebSockets (uWebSockets.js v20.30: the C++ server with a JavaScript
// handler per message), with the semantics of `hibiki serve`: /echo sends every message back
// as it came; /broadcast sends every message to every member, its sender included
// (`app.publish`, done in C++). No compression, no idle timeout, no pings.
//
// usage: node server.js ADDR [CERT KEY]      (ADDR host:port; CERT and KEY PEM: wss://)
'use strict';
// The native module itself, so that a missing binary fails here instead of falling back to
// the package's pure-JavaScript stand-in.
const uWS = require(`@trufflesuite/uws-js-unofficial/binaries/uws_${process.platform}_${process.arch}_${process.versions.modules}.node`);

const [addr, cert, key] = process.argv.slice(2);
if (!addr) {
  console.error('usage: node server.js HOST:PORT [CERT KEY]');
  process.exit(2);
}
const at = addr.lastIndexOf(':');
const host = addr.slice(0, at);
const port = Number(addr.slice(at + 1));

const app = cert ? uWS.SSLApp({ cert_file_name: cert, key_file_name: key }) : uWS.App();
const common = {
  compression: uWS.DISABLED,
  maxPayloadLength: 16 * 1024 * 1024,
  idleTimeout: 0,
  sendPingsAutomatically: false,
  // A subscriber holds up to 16 MiB unsent before messages to it are dropped: the load keeps
  // a few messages in flight, so nothing is dropped here.
  maxBackpressure: 16 * 1024 * 1024,
};
app.ws('/echo', {
  ...common,
  message: (ws, message, isBinary) => {
    ws.send(message, isBinary);
  },
});
app.ws('/broadcast', {
  ...common,
  open: (ws) => {
    ws.subscribe('all');
  },
  message: (ws, message, isBinary) => {
    app.publish('all', message, isBinary);
  },
});
app.any('/*', (res) => {
  res.writeStatus('404 Not Found').end();
});
app.listen(host, port, (socket) => {
  if (!socket) {
    console.error(`cannot listen on ${addr}`);
    process.exit(1);
  }
});
