//! Client input inside error messages, bounded.
//!
//! An error that repeats what the client sent helps the client find its mistake, but an
//! unbounded echo turns one large field into a megabyte trailer that default gRPC clients
//! refuse to read (they then report RESOURCE_EXHAUSTED instead of the real error). Every
//! message and detail of this project's servers quotes client input through [`echo`] or
//! [`echo_bytes`]: at most [`ECHO_LIMIT`] bytes of it, escaped, with the full length said
//! when it was cut. The escaped text is bounded too (control characters escape to several
//! bytes each, and `grpc-message` percent-encodes again), and [`bounded`] caps a whole
//! message by its size on the wire, so that a status always fits well under 2 KiB.

use std::fmt;

/// The most bytes of client input an error message repeats.
pub const ECHO_LIMIT: usize = 128;

/// The longest error message (or detail text) a server sends, in bytes as `grpc-message`
/// carries it (percent-encoded): a net under [`echo`], so that a message that quotes input
/// without it by mistake still keeps the trailers small.
pub const MAX_MESSAGE_BYTES: usize = 512;

/// `message`, cut (at a character boundary) where its percent-encoded form would pass
/// [`MAX_MESSAGE_BYTES`], with `…(N bytes)` appended. Both servers pass every status message
/// and detail text through it.
pub fn bounded(message: String) -> String {
    let mut cost = 0;
    for (at, c) in message.char_indices() {
        cost += wire_bytes(c);
        if cost > MAX_MESSAGE_BYTES {
            return format!("{}…({} bytes)", &message[..at], message.len());
        }
    }
    message
}

/// What `c` costs in a `grpc-message` header: printable ASCII is sent as is, other bytes (and
/// a few that tonic escapes) as `%XX`.
fn wire_bytes(c: char) -> usize {
    if c.is_ascii_graphic() && !matches!(c, '"' | '#' | '%' | '<' | '>' | '`' | '?' | '{' | '}') {
        1
    } else {
        3 * c.len_utf8()
    }
}

/// `input` quoted and escaped like Rust's `{:?}`, cut to its first [`ECHO_LIMIT`] bytes (at a
/// character boundary) with `…(N bytes)` appended when longer.
pub fn echo(input: &str) -> Echo<'_> {
    Echo(Input::Text(input))
}

/// Like [`echo`] for bytes that may not be UTF-8: valid UTF-8 prints as text, anything else
/// as escaped bytes.
pub fn echo_bytes(input: &[u8]) -> Echo<'_> {
    match std::str::from_utf8(input) {
        Ok(text) => Echo(Input::Text(text)),
        Err(_) => Echo(Input::Bytes(input)),
    }
}

/// Client input as an error message shows it; see [`echo`].
#[derive(Clone, Copy)]
pub struct Echo<'a>(Input<'a>);

#[derive(Clone, Copy)]
enum Input<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl fmt::Display for Echo<'_> {
    /// Quotes characters (or bytes) while their escaped form stays within [`ECHO_LIMIT`]
    /// bytes, which also shows at most that many bytes of the input.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (shown, total) = match self.0 {
            Input::Text(text) => {
                let mut escaped = String::new();
                let mut shown = 0;
                for c in text.chars() {
                    let before = escaped.len();
                    match c {
                        // As `{:?}` of a str: a single quote needs no escape between double ones.
                        '\'' => escaped.push(c),
                        c => escaped.extend(c.escape_debug()),
                    }
                    if escaped.len() > ECHO_LIMIT {
                        escaped.truncate(before);
                        break;
                    }
                    shown += c.len_utf8();
                }
                write!(f, "\"{escaped}\"")?;
                (shown, text.len())
            }
            Input::Bytes(bytes) => {
                let mut escaped = String::new();
                let mut shown = 0;
                for byte in bytes {
                    let before = escaped.len();
                    escaped.extend(byte.escape_ascii().map(char::from));
                    if escaped.len() > ECHO_LIMIT {
                        escaped.truncate(before);
                        break;
                    }
                    shown += 1;
                }
                write!(f, "b\"{escaped}\"")?;
                (shown, bytes.len())
            }
        };
        if shown < total {
            write!(f, "…({total} bytes)")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_quoted_whole() {
        assert_eq!(echo("cart-1").to_string(), "\"cart-1\"");
        assert_eq!(echo("a\nb").to_string(), "\"a\\nb\"");
    }

    #[test]
    fn long_input_is_cut_at_the_limit_and_its_length_said() {
        let long = "x".repeat(1 << 20);
        let shown = echo(&long).to_string();
        assert!(shown.starts_with(&format!("\"{}\"", "x".repeat(ECHO_LIMIT))));
        assert!(shown.ends_with("…(1048576 bytes)"), "{shown}");
        assert!(shown.len() < ECHO_LIMIT + 32);
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let long = "é".repeat(100); // 200 bytes, 2 per character
        let shown = echo(&long).to_string();
        assert!(shown.starts_with(&format!("\"{}\"", "é".repeat(ECHO_LIMIT / 2))));
    }

    #[test]
    fn control_characters_count_as_escaped() {
        let control = "\u{1}".repeat(1 << 20);
        let shown = echo(&control).to_string();
        assert!(
            shown.len() < ECHO_LIMIT + 32,
            "{} bytes: {shown}",
            shown.len()
        );
        assert!(shown.starts_with("\"\\u{1}\\u{1}"), "{shown}");
        assert!(shown.ends_with("…(1048576 bytes)"), "{shown}");
        assert_eq!(echo("it's").to_string(), "\"it's\"");
    }

    #[test]
    fn messages_are_cut_by_their_size_on_the_wire() {
        assert_eq!(bounded("short message".into()), "short message");
        for long in ["é".repeat(1000), "\u{1}".repeat(1000), "x".repeat(1000)] {
            let cut = bounded(long.clone());
            let wire: usize = cut.chars().map(wire_bytes).sum();
            assert!(wire <= MAX_MESSAGE_BYTES + 40, "{wire} bytes on the wire");
            assert!(cut.ends_with(&format!("…({} bytes)", long.len())), "{cut}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_escaped_and_bounded() {
        let junk = vec![0xffu8; 3 * 1024 * 1024];
        let shown = echo_bytes(&junk).to_string();
        assert!(shown.starts_with("b\"\\xff"));
        assert!(shown.len() < 4 * ECHO_LIMIT + 32, "{} bytes", shown.len());
        assert_eq!(echo_bytes(b"k1").to_string(), "\"k1\"");
    }
}
