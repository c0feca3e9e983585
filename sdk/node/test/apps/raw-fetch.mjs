// A plain fetch handler for the protocol tests that run against a fake master
// (test/session.test.js). Each route exercises one protocol behaviour.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

let child = null;
export default async function handler(request) {
  const url = new URL(request.url);
  switch (url.pathname) {
    case '/hello':
      return new Response('Hello, world!\n', { headers: { 'content-type': 'text/plain' } });
    case '/big':
      // 200 000 bytes: more than one 64 KiB chunk, more than a small window.
      return new Response(new Uint8Array(200000).fill(7));
    case '/echo':
      return new Response(request.body);
    case '/count': {
      let n = 0;
      for await (const chunk of request.body) n += chunk.length;
      return new Response(String(n));
    }
    case '/wait':
      await new Promise((resolve) => request.signal.addEventListener('abort', resolve));
      console.log('aborted');
      return new Response('late');
    case '/spawn':
      // A grandchild that must die with the worker's process group.
      child = spawn('sleep', ['60'], { stdio: 'ignore' });
      return new Response(String(child.pid));
    case '/never':
      // One chunk, then nothing until cancelled.
      return new Response(
        new ReadableStream({
          start(controller) {
            controller.enqueue(new TextEncoder().encode('first'));
          },
          cancel(reason) {
            console.log(`stream cancelled: ${reason && reason.name}`);
          },
        }),
      );
    case '/own': {
      // Whether every body chunk owns its ArrayBuffer (sees nothing but itself).
      let own = true;
      for await (const chunk of request.body) own &&= chunk.buffer.byteLength === chunk.length;
      return new Response(String(own));
    }
    case '/midway':
      // One chunk, a pause (so the head and the chunk go out), then the stream
      // errors: the head went out, so the request fails.
      return new Response(
        new ReadableStream({
          async pull(controller) {
            if (this.sent) {
              await new Promise((resolve) => setTimeout(resolve, 20));
              controller.error(new Error('stream broke midway'));
            } else controller.enqueue(new TextEncoder().encode('part'));
            this.sent = true;
          },
        }),
      );
    case '/overrun':
      // Streamed bytes past the declared Content-Length.
      return new Response(
        new ReadableStream({
          start(controller) {
            controller.enqueue(new Uint8Array(70000).fill(1));
            controller.enqueue(new Uint8Array(70000).fill(2));
            controller.close();
          },
        }),
        { headers: { 'content-length': '100000' } },
      );
    case '/bigheader':
      return new Response('small body', { headers: { 'x-big': 'b'.repeat(Number(url.searchParams.get('n'))) } });
    case '/bigstream':
      // The same, with a streamed body (the head goes out on its own).
      return new Response(
        new ReadableStream({
          async pull(controller) {
            await new Promise((resolve) => setTimeout(resolve, 5));
            controller.enqueue(new TextEncoder().encode('x'));
            controller.close();
          },
        }),
        { headers: { 'x-big': 'b'.repeat(Number(url.searchParams.get('n'))) } },
      );
    case '/lenzero':
      return new Response(null, { headers: { 'content-length': '5' } });
    case '/cloexec': {
      // The channel's descriptor flags (octal): children must not inherit it.
      const info = readFileSync(`/proc/self/fdinfo/${process.env.FERRY_FD}`, 'utf8');
      return new Response(info.match(/flags:\s*(\d+)/)[1]);
    }
    case '/headers':
      return new Response(JSON.stringify([...request.headers]), {
        headers: [['set-cookie', 'a=1'], ['set-cookie', 'b=2']],
      });
    default:
      return new Response('not found\n', { status: 404 });
  }
}
