//! Client input inside error messages, bounded.
//!
//! An error that repeats what the client sent helps the client find its mistake, but an
//! unbounded echo turns one large field into a megabyte trailer that default gRPC clients
//! refuse to read (they then report RESOURCE_EXHAUSTED instead of the real error). Every
//! message and detail of this project's servers quotes client input through [`echo`] or
//! [`echo_bytes`]: at most [`ECHO_LIMIT`] bytes of it, escaped, with the full length said
//! when it was cut.

use std::fmt;

/// The most bytes of client input an error message repeats.
pub const ECHO_LIMIT: usize = 128;

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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = match self.0 {
            Input::Text(text) => {
                let mut end = text.len().min(ECHO_LIMIT);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                write!(f, "{:?}", &text[..end])?;
                text.len()
            }
            Input::Bytes(bytes) => {
                let shown = &bytes[..bytes.len().min(ECHO_LIMIT)];
                write!(f, "b\"{}\"", shown.escape_ascii())?;
                bytes.len()
            }
        };
        if total > ECHO_LIMIT {
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
    fn bytes_that_are_not_utf8_are_escaped_and_bounded() {
        let junk = vec![0xffu8; 3 * 1024 * 1024];
        let shown = echo_bytes(&junk).to_string();
        assert!(shown.starts_with("b\"\\xff"));
        assert!(shown.len() < 4 * ECHO_LIMIT + 32, "{} bytes", shown.len());
        assert_eq!(echo_bytes(b"k1").to_string(), "\"k1\"");
    }
}
