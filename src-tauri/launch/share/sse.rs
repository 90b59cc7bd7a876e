//! A server-sent-events parser for the bridge: bytes in, the data of each complete event out
//! (Serena's answers to a POST, and its GET stream of server-initiated messages).

/// A server-sent-events parser: bytes in, the data of each complete event out.
#[derive(Default)]
pub struct Events {
    buf: Vec<u8>,
}

impl Events {
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        // An event ends at a blank line (LF LF, or CR LF CR LF).
        while let Some((end, sep)) = find_blank_line(&self.buf) {
            let event: Vec<u8> = self.buf.drain(..end + sep).collect();
            let text = String::from_utf8_lossy(&event[..end]);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                out.push(data.join("\n"));
            }
        }
        out
    }
}

fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_whole_however_the_bytes_are_cut() {
        let stream = b"event: message\r\ndata: {\"id\":1}\r\n\r\n: a comment\n\ndata: a\ndata: b\n\nid: 7\ndata:{\"id\":2}\n\n";
        let whole = Events::default().feed(stream);
        assert_eq!(whole, ["{\"id\":1}", "a\nb", "{\"id\":2}"]);
        for cut in 1..stream.len() {
            let mut e = Events::default();
            let mut got = e.feed(&stream[..cut]);
            got.extend(e.feed(&stream[cut..]));
            assert_eq!(got, whole, "cut at {cut}");
        }
    }
}
