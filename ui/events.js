// The daemon's event stream (`/api/events`, server-sent events), read with `fetch` rather than
// `EventSource`: an EventSource hands the page only the event names it listens for, so an event
// the page does not know would vanish without a trace. Here every event, named or not, reaches
// one callback with its name; what each name means is app.js's (its table of handlers), and so
// is reconnecting. Not here: `id:` and `retry:` (the daemon sends neither).

/**
 * Reads the stream `body` (a fetch Response's) to its end, calling `onEvent(name, data)` for each
 * event: `name` is its `event:` field (`message` without one), `data` its `data:` lines joined
 * with newlines, as text. Comments (the keep-alives) and other fields are skipped. Resolves when
 * the stream ends; rejects when it breaks.
 */
export async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let name = '';
  let data = [];
  const line = (text) => {
    if (text === '') {
      if (data.length) onEvent(name || 'message', data.join('\n'));
      name = '';
      data = [];
      return;
    }
    if (text.startsWith(':')) return;
    const colon = text.indexOf(':');
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') name = value;
    else if (field === 'data') data.push(value);
  };
  let buffer = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buffer += value;
    // A `\r` at the end may be the first half of a `\r\n`: it waits for the next chunk.
    const cut = buffer.endsWith('\r') ? buffer.length - 1 : buffer.length;
    const lines = buffer.slice(0, cut).split(/\r\n|\r|\n/);
    buffer = lines.pop() + buffer.slice(cut);
    lines.forEach(line);
  }
}
