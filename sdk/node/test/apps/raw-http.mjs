// A bare (req, res) handler whose listeners throw when a frame from the master reaches
// them (session.test.js): the throw must fail that request only.
export default function handler(req, res) {
  if (req.url === '/aborted-throws') {
    req.on('aborted', () => {
      throw new Error('listener boom (aborted)');
    });
    return; // answers nothing: only the Cancel ends it
  }
  if (req.url === '/data-throws') {
    req.on('data', () => {
      throw new Error('listener boom (data)');
    });
    return;
  }
  res.end('ok\n');
}
