//! Checks for user-supplied text fields, shared by carts and to-do lists.
//!
//! Every string that a client sends and the server keeps is bounded in size and free of
//! control characters, so no state grows without bound and nothing a client sends can break
//! a log line or a terminal. Errors name the request field so the edge can report it.

use thiserror::Error;

/// Longest session key or list name, matching the registry's key rule.
pub const MAX_KEY_BYTES: usize = 256;
/// Longest sku.
pub const MAX_SKU_BYTES: usize = 64;
/// Longest product name.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest discount code.
pub const MAX_CODE_BYTES: usize = 64;
/// Longest to-do title.
pub const MAX_TITLE_BYTES: usize = 1_000;
/// Longest shop domain (a DNS name is at most 253 bytes).
pub const MAX_DOMAIN_BYTES: usize = 256;
/// Longest landing page; URLs run long, but not unboundedly.
pub const MAX_LANDING_BYTES: usize = 2_048;
/// Longest IP address text (IPv6 with a zone fits easily).
pub const MAX_IP_BYTES: usize = 64;
/// Longest member id.
pub const MAX_MEMBER_ID_BYTES: usize = 256;
/// Longest order id (the server makes these; the bound only guards against bugs).
pub const MAX_ORDER_ID_BYTES: usize = 256;

/// A text field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TextError {
    /// Required and empty, or only whitespace.
    #[error("{field} must not be blank")]
    Blank {
        /// The request field at fault.
        field: &'static str,
    },
    /// Longer than its bound; the value itself is not echoed back, it may be huge.
    #[error("{field} is {len} bytes; at most {max} are allowed")]
    TooLong {
        /// The request field at fault.
        field: &'static str,
        /// Its length in bytes, so the client sees by how much.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Contains a control character (newline, tab, NUL, ...).
    #[error("{field} must not contain control characters")]
    ControlCharacter {
        /// The request field at fault.
        field: &'static str,
    },
}

impl TextError {
    /// The request field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Blank { field }
            | Self::TooLong { field, .. }
            | Self::ControlCharacter { field } => field,
        }
    }
}

/// A field that must hold something: not blank, at most `max_bytes`, no control characters.
pub fn required(field: &'static str, value: &str, max_bytes: usize) -> Result<(), TextError> {
    if value.trim().is_empty() {
        return Err(TextError::Blank { field });
    }
    optional(field, value, max_bytes)
}

/// A field that may be empty: at most `max_bytes`, no control characters.
pub fn optional(field: &'static str, value: &str, max_bytes: usize) -> Result<(), TextError> {
    // Length first: it is O(1), and a 1 MB value is refused without scanning it.
    if value.len() > max_bytes {
        return Err(TextError::TooLong {
            field,
            len: value.len(),
            max: max_bytes,
        });
    }
    if value.chars().any(char::is_control) {
        return Err(TextError::ControlCharacter { field });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_refuses_empty_and_whitespace() {
        assert_eq!(
            required("sku", "", 64),
            Err(TextError::Blank { field: "sku" })
        );
        assert_eq!(
            required("sku", "  \u{3000}", 64),
            Err(TextError::Blank { field: "sku" })
        );
    }

    #[test]
    fn required_accepts_text_with_inner_spaces() {
        assert_eq!(required("name", "Blue mug", 256), Ok(()));
    }

    #[test]
    fn length_is_counted_in_bytes_not_chars() {
        // "é" is two bytes: three of them are six bytes.
        assert_eq!(required("sku", "ééé", 6), Ok(()));
        assert_eq!(
            required("sku", "ééé", 5),
            Err(TextError::TooLong {
                field: "sku",
                len: 6,
                max: 5
            })
        );
    }

    #[test]
    fn exactly_the_bound_is_allowed() {
        assert_eq!(required("code", &"A".repeat(64), 64), Ok(()));
        assert!(required("code", &"A".repeat(65), 64).is_err());
    }

    #[test]
    fn control_characters_are_refused_everywhere() {
        for bad in ["a\nb", "a\tb", "\0", "a\u{7f}", "a\u{85}b", "x\r"] {
            assert_eq!(
                required("title", bad, 100),
                Err(TextError::ControlCharacter { field: "title" }),
                "{bad:?}"
            );
            assert!(optional("ip", bad, 100).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn optional_accepts_empty() {
        assert_eq!(optional("member_id", "", 256), Ok(()));
    }

    #[test]
    fn optional_still_bounds_length() {
        assert_eq!(
            optional("landing", &"/".repeat(3), 2),
            Err(TextError::TooLong {
                field: "landing",
                len: 3,
                max: 2
            })
        );
    }

    #[test]
    fn errors_name_the_field_and_read_lowercase() {
        let e = required("name", "", 10).unwrap_err();
        assert_eq!(e.field(), "name");
        assert_eq!(e.to_string(), "name must not be blank");
        let e = required("name", "abc", 2).unwrap_err();
        assert_eq!(e.to_string(), "name is 3 bytes; at most 2 are allowed");
        let e = required("name", "a\nb", 10).unwrap_err();
        assert_eq!(e.to_string(), "name must not contain control characters");
    }

    #[test]
    fn huge_values_are_refused_by_length() {
        let huge = "x".repeat(1 << 20);
        assert!(matches!(
            required("name", &huge, MAX_NAME_BYTES),
            Err(TextError::TooLong { len, .. }) if len == 1 << 20
        ));
    }
}
