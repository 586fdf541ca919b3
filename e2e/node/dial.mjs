// dial.mjs connects to the WebSocket URL given as the first argument with
// ws's followRedirects, sends one text message (the second argument, or
// "hello"), and prints the reply and the URL it ended up on:
//
//	reply: <message>
//	url: <final URL>
//
// It exits 0 after a reply, 1 on any error, a close before the reply, or
// 10 seconds without one. The e2e tests use it to check that a Node client
// follows the wsredirect middleware's 307.
import WebSocket from 'ws';

const [url, message = 'hello'] = process.argv.slice(2);
if (!url) {
  console.error('usage: node dial.mjs ws://host/path [message]');
  process.exit(1);
}

const fail = (why) => {
  console.error(`dial.mjs: ${why}`);
  process.exit(1);
};

const timer = setTimeout(() => fail('no reply within 10s'), 10_000);
const ws = new WebSocket(url, { followRedirects: true, maxRedirects: 10 });
ws.on('open', () => ws.send(message));
ws.on('message', (data) => {
  clearTimeout(timer);
  console.log(`reply: ${data}`);
  console.log(`url: ${ws.url}`);
  ws.close();
  process.exitCode = 0;
});
ws.on('unexpected-response', (req, res) => fail(`unexpected response ${res.statusCode}`));
ws.on('error', (err) => fail(err.message));
ws.on('close', (code) => {
  if (process.exitCode !== 0) fail(`closed with ${code} before a reply`);
});
