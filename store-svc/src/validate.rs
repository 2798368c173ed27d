//! Request validation: every limit on a field, with a message that names the field and says
//! what would be accepted. Handlers call these before anything touches the queue or disk.
//! A message quotes the client's input only through [`echo`], so a field of any size gets a
//! reply of bounded size.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use kit::echo::echo;

use crate::error::Error;

/// Longest key, in bytes: room for a 256-byte session key, escaped, plus a record suffix.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest namespace, in characters.
pub const MAX_NAMESPACE_CHARS: usize = 64;
/// Scan page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest scan page; larger requests are served this many.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Most writes one BatchWrite may carry.
pub const MAX_BATCH_WRITES: usize = 1000;
/// Most mutations one Commit may carry.
pub const MAX_COMMIT_MUTATIONS: usize = 100;

/// A namespace is 1 to 64 characters of `[a-z0-9_-]`. Whether the store serves it is
/// [`Namespaces::check`](crate::namespaces::Namespaces::check)'s question.
pub fn namespace(namespace: &str) -> Result<(), Error> {
    let ok = (1..=MAX_NAMESPACE_CHARS).contains(&namespace.len())
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "namespace",
            format!(
                "{} must be 1 to {MAX_NAMESPACE_CHARS} characters of [a-z0-9_-]",
                echo(namespace)
            ),
        ))
    }
}

/// A key is 1 to 256 bytes of UTF-8 with no control characters.
pub fn key(key: &str) -> Result<(), Error> {
    key_like("key", key, false)
}

/// A scan prefix follows the key rules but may be empty.
pub fn prefix(prefix: &str) -> Result<(), Error> {
    key_like("prefix", prefix, true)
}

fn key_like(field: &'static str, key: &str, may_be_empty: bool) -> Result<(), Error> {
    if key.is_empty() && !may_be_empty {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "is {} bytes; at most {MAX_KEY_BYTES} are allowed",
                key.len()
            ),
        ));
    }
    if let Some(position) = key.chars().position(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("has a control character at character {position}; none are allowed"),
        ));
    }
    Ok(())
}

/// A value is at most `limit` bytes.
pub fn value(value: &[u8], limit: usize) -> Result<(), Error> {
    if value.len() > limit {
        return Err(Error::invalid(
            "value",
            format!("is {} bytes; at most {limit} are allowed", value.len()),
        ));
    }
    Ok(())
}

/// A BatchWrite holds 1 to [`MAX_BATCH_WRITES`] writes.
pub fn batch_len(len: usize) -> Result<(), Error> {
    if (1..=MAX_BATCH_WRITES).contains(&len) {
        Ok(())
    } else {
        Err(Error::invalid(
            "writes",
            format!("holds {len} writes; send 1 to {MAX_BATCH_WRITES} per call"),
        ))
    }
}

/// A Commit holds 1 to [`MAX_COMMIT_MUTATIONS`] mutations.
pub fn commit_len(len: usize) -> Result<(), Error> {
    if (1..=MAX_COMMIT_MUTATIONS).contains(&len) {
        Ok(())
    } else {
        Err(Error::invalid(
            "mutations",
            format!("holds {len} mutations; send 1 to {MAX_COMMIT_MUTATIONS} per commit"),
        ))
    }
}

/// 0 means the default; negative is an error; above the maximum is served the maximum.
pub fn page_size(page_size: i32) -> Result<usize, Error> {
    match page_size {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(Error::invalid(
            "page_size",
            format!("is {n}; use 0 for the default ({DEFAULT_PAGE_SIZE}) or 1 to {MAX_PAGE_SIZE}"),
        )),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

/// Opaque scan continuation: which namespace and prefix it belongs to, and the last key
/// served. Binding it to the query means a token cannot be replayed against another scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    /// The namespace of the scan that produced it.
    pub namespace: String,
    /// The prefix of the scan that produced it.
    pub prefix: String,
    /// The last key of the page served; the next page starts after it.
    pub last_key: String,
}

const TOKEN_FORMAT: u8 = 1;

impl PageToken {
    /// The token as sent to clients: base64url of `format, len(ns), ns, len(prefix), prefix, last_key`.
    pub fn encode(&self) -> String {
        let mut bytes = vec![TOKEN_FORMAT];
        for part in [&self.namespace, &self.prefix] {
            bytes.extend_from_slice(&(part.len() as u16).to_be_bytes());
            bytes.extend_from_slice(part.as_bytes());
        }
        bytes.extend_from_slice(self.last_key.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes a client's token and checks it belongs to this namespace and prefix.
    /// `Ok(None)` for the empty token (first page).
    pub fn decode(token: &str, namespace: &str, prefix: &str) -> Result<Option<Self>, Error> {
        if token.is_empty() {
            return Ok(None);
        }
        let garbage = || {
            Error::invalid(
                "page_token",
                "is not a token this server issued; pass next_page_token from the previous page unchanged, or empty for the first page",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| garbage())?;
        let (&format, mut rest) = bytes.split_first().ok_or_else(garbage)?;
        if format != TOKEN_FORMAT {
            return Err(garbage());
        }
        let mut parts = [String::new(), String::new()];
        for part in &mut parts {
            let (len, tail) = rest.split_first_chunk::<2>().ok_or_else(garbage)?;
            let len = u16::from_be_bytes(*len) as usize;
            let (text, tail) = tail.split_at_checked(len).ok_or_else(garbage)?;
            *part = String::from_utf8(text.to_vec()).map_err(|_| garbage())?;
            rest = tail;
        }
        let last_key = String::from_utf8(rest.to_vec()).map_err(|_| garbage())?;
        let [token_namespace, token_prefix] = parts;
        if token_namespace != namespace || token_prefix != prefix {
            return Err(Error::invalid(
                "page_token",
                "belongs to a scan of another namespace or prefix; start again with an empty token",
            ));
        }
        if !last_key.starts_with(prefix) || key(&last_key).is_err() {
            return Err(garbage());
        }
        Ok(Some(Self {
            namespace: token_namespace,
            prefix: token_prefix,
            last_key,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(result: Result<(), Error>) -> String {
        match result {
            Err(Error::InvalidArgument { field, .. }) => field.into_owned(),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn namespaces_are_short_lowercase_words() {
        for good in ["orders", "cart_v1", "a-b", "0", &"n".repeat(64)] {
            assert!(namespace(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "Orders",
            "a/b",
            "a b",
            "ä",
            &"n".repeat(65),
            "__sled__Default",
        ] {
            assert_eq!(field_of(namespace(bad)), "namespace", "{bad:?}");
        }
    }

    #[test]
    fn a_huge_bad_namespace_is_quoted_in_part() {
        let huge = "\u{1}".repeat(3 << 20);
        match namespace(&huge) {
            Err(Error::InvalidArgument { description, .. }) => {
                assert!(description.len() < 1024, "{} bytes", description.len());
                assert!(description.contains("…(3145728 bytes)"), "{description}");
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn keys_are_1_to_1024_bytes_without_control_characters() {
        assert!(key("cart:42").is_ok());
        assert!(key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(key("ключ").is_ok());
        for bad in [
            String::new(),
            "k".repeat(MAX_KEY_BYTES + 1),
            "a\nb".into(),
            "\u{7f}".into(),
            "\u{85}".into(),
        ] {
            assert_eq!(field_of(key(&bad)), "key", "{bad:?}");
        }
        assert!(prefix("").is_ok());
        assert_eq!(field_of(prefix("a\0")), "prefix");
    }

    #[test]
    fn values_respect_the_limit() {
        assert!(value(&[0; 10], 10).is_ok());
        assert_eq!(field_of(value(&[0; 11], 10)), "value");
    }

    #[test]
    fn batches_hold_1_to_1000_writes() {
        assert!(batch_len(1).is_ok());
        assert!(batch_len(MAX_BATCH_WRITES).is_ok());
        assert_eq!(field_of(batch_len(0)), "writes");
        assert_eq!(field_of(batch_len(MAX_BATCH_WRITES + 1)), "writes");
        assert_eq!(field_of(commit_len(0)), "mutations");
        assert_eq!(field_of(commit_len(MAX_COMMIT_MUTATIONS + 1)), "mutations");
        assert!(commit_len(MAX_COMMIT_MUTATIONS).is_ok());
    }

    #[test]
    fn page_size_defaults_caps_and_refuses_negatives() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(7).unwrap(), 7);
        assert_eq!(page_size(i32::MAX).unwrap(), MAX_PAGE_SIZE);
        assert_eq!(field_of(page_size(-1).map(drop)), "page_size");
    }

    #[test]
    fn page_tokens_round_trip_and_are_bound_to_their_scan() {
        let token = PageToken {
            namespace: "ns".into(),
            prefix: "cart:".into(),
            last_key: "cart:9".into(),
        };
        let text = token.encode();
        assert_eq!(
            PageToken::decode(&text, "ns", "cart:").unwrap(),
            Some(token)
        );
        assert_eq!(PageToken::decode("", "ns", "cart:").unwrap(), None);
        assert_eq!(
            field_of(PageToken::decode(&text, "ns", "list:").map(drop)),
            "page_token"
        );
        assert_eq!(
            field_of(PageToken::decode(&text, "other", "cart:").map(drop)),
            "page_token"
        );
        for garbage in [
            "%%%",
            "AAAA",
            "not-a-token",
            &URL_SAFE_NO_PAD.encode([1, 0, 9]),
        ] {
            assert_eq!(
                field_of(PageToken::decode(garbage, "ns", "cart:").map(drop)),
                "page_token"
            );
        }
    }
}
